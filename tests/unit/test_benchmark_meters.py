"""What the benchmark runner watches while a scenario runs: the SMTP sink's count of mails, and
the peak memory meter, each doing no more work per look than what is new."""

import os

from benchmarks.memory import RssMeter
from benchmarks.smtp_sink import Received, SmtpSink


def test_the_sink_counts_each_tag_s_mails_across_reads_and_leaves_a_half_written_line(tmp_path):
    log = tmp_path / "received.log"
    log.write_text("a1-x@example.org\t100\tpdf\nb1-y@example.org\t50\t-\n")
    sink = SmtpSink(port=0, log=log, pid=0)
    assert sink.received("-x@") == Received(mails=1, with_pdf=1, bytes=100)

    with log.open("a") as handle:
        handle.write("a2-x@example.org\t30\t-\nb2-y@example.org,a3-x@example.org\t7")  # the last line unfinished
    assert sink.received("-x@") == Received(mails=2, with_pdf=1, bytes=130)
    assert sink.received("-y@") == Received(mails=1, with_pdf=0, bytes=50), "a tag first asked for late: every line"

    with log.open("a") as handle:
        handle.write("0\tpdf\n")
    assert sink.received("-x@") == Received(mails=3, with_pdf=2, bytes=200)
    assert sink.received("-y@") == Received(mails=2, with_pdf=1, bytes=120), "one mail to both tags"
    assert sink.received("-x@") == Received(mails=3, with_pdf=2, bytes=200), "read again: the same counts"


def test_the_memory_meter_looks_up_which_processes_a_group_has_only_when_asked_to():
    lookups = []

    def group():
        lookups.append(1)
        return [os.getpid()]

    meter = RssMeter({"client": group})
    meter._sample()
    meter._sample(resolve=False)
    meter._sample(resolve=False)
    assert len(lookups) == 1 and meter.pids == {"client": [os.getpid()]}
    assert meter.peaks["client"] > 0, "this process's RSS, in KiB"
    meter._sample()
    assert len(lookups) == 2
