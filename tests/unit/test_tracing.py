"""The tracing helpers: W3C trace context in and out, spans only while traces are on, and the
items of a batched message each continued in their own trace."""

from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode

from services.infra import tracing

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
GOOD = f"00-{TRACE}-{SPAN}-01"


def ids(span) -> tuple[str, str]:
    context = span.get_span_context() if hasattr(span, "get_span_context") else span.context
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        42,
        "00-xyz",
        GOOD.upper(),  # W3C: lower-case hex only
        f"00-{'0' * 32}-{SPAN}-01",  # an all-zero trace id is invalid
        f"00-{TRACE}-{'0' * 16}-01",  # so is an all-zero span id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        GOOD + "x" * 200,
    ],
)
def test_what_is_not_w3c_trace_context_is_no_parent(value):
    assert tracing.extract({tracing.TRACEPARENT: value}) is None
    assert tracing.parent_of(value if isinstance(value, str) else None) is None


def test_a_traceparent_and_its_tracestate_are_read_and_written_back(spans):
    context = tracing.extract({"traceparent": GOOD, "tracestate": "vendor=value"})
    with tracing.span("child", parent=context) as child:
        carried = tracing.carrier_of(child)
        headers = tracing.amqp_headers(child)
    assert carried["traceparent"] == f"00-{TRACE}-{ids(child)[1]}-01" and carried["tracestate"] == "vendor=value"
    assert headers == {"nameko.traceparent": carried["traceparent"], "nameko.tracestate": "vendor=value"}
    [finished] = spans.get_finished_spans()
    assert f"{finished.parent.span_id:016x}" == SPAN and finished.parent.is_remote


def test_off_nothing_is_made_and_nothing_is_carried(span_exporter):
    span_exporter.clear()
    assert not tracing.enabled()
    with tracing.span("nothing", parent=GOOD) as span:
        assert span is None
        assert tracing.current_traceparent() is None and tracing.amqp_headers() == {}
        assert tracing.current_ids() == {}
    assert tracing.start("nothing") is None
    items = [{"traceparent": GOOD}]
    with tracing.adopted(items, "handle"), tracing.item(items[0], "handle"):
        pass
    assert items == [{"traceparent": GOOD}]  # untouched
    assert span_exporter.get_finished_spans() == ()


def test_an_item_of_another_trace_gets_a_span_of_its_own_linked_to_the_message_s(spans):
    with tracing.span("process message", tracing.CONSUMER) as message:
        message_trace = ids(message)[0]
        with tracing.item({"traceparent": f"00-{message_trace}-{SPAN}-01"}, "handle item"):
            assert ids(tracing.trace.get_current_span()) == ids(message)  # same trace: the message's span
        with tracing.item({"traceparent": GOOD}, "handle item"):
            inner = tracing.trace.get_current_span()
        with tracing.item({"traceparent": None}, "handle item"):
            assert ids(tracing.trace.get_current_span()) == ids(message)  # none: the message's
    [item, _] = spans.get_finished_spans()
    assert ids(item) == ids(inner) and (item.name, ids(item)[0]) == ("handle item", TRACE)
    assert f"{item.parent.span_id:016x}" == SPAN
    assert [f"{link.context.span_id:016x}" for link in item.links] == [ids(message)[1]]


def test_items_handled_together_each_name_the_span_their_work_belongs_to(spans):
    items = [{"traceparent": None}, {"traceparent": GOOD}, {"traceparent": "garbage"}]
    with pytest.raises(RuntimeError), tracing.span("process message") as message:
        here = tracing.current_traceparent()
        with tracing.adopted(items, "record"):
            raise RuntimeError("the transaction failed")
    assert here.split("-")[1:3] == list(ids(message))
    assert items[0]["traceparent"] == items[2]["traceparent"] == here
    [adopted] = [s for s in spans.get_finished_spans() if s.name == "record"]
    assert items[1]["traceparent"].split("-")[1:3] == [TRACE, ids(adopted)[1]]
    assert adopted.status.status_code == StatusCode.ERROR  # the block's error is the span's too
    assert f"{adopted.parent.span_id:016x}" == SPAN


def test_started_spans_end_with_the_error_they_are_given(spans):
    started = [tracing.start("apply", parent=GOOD), tracing.start("apply", parent=GOOD)]
    tracing.end([started[0]])
    tracing.end([started[1], None], ValueError("rolled back"))
    ok, failed = spans.get_finished_spans()
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR and "rolled back" in failed.status.description
    assert [event.name for event in failed.events] == ["exception"]
