"""The status service's applier alone, on a SQLite file or PostgreSQL: a bulk job's rows recorded, then applied.

    .venv/bin/python -m benchmarks.applier [--rows 100000] [--students 512] [--batch-sizes 500,2000]
        [--backend sqlite|postgresql] [--postgres-uri URI] [--statements]

No broker and no other process: what one core does with the database side of (d) — the rows
recorded as ``status.add_job_rows`` records them (1,000 a transaction), the job sealed, then
``batches.apply_pending`` in transactions of each batch size until nothing is pending (statuses,
history rows and the outbox rows of the events, synced commits as the service makes them). Every
row is a real transition (each student goes ``active``, ``suspended``, ``active``, …). Prints rows/s
and µs per row for the recording and for the apply; against (d), the rest is the system around it.
On PostgreSQL each run has a database of its own (``mensageria_bench_applier``, dropped after).
``--statements``: where the apply's time went, per kind of SQL statement (wall time of each
``execute`` from the client, the server's work included), and in commits; this process's CPU per row
(on SQLite the database's work too, its fsyncs not); on PostgreSQL also the
server's CPU (its processes' and the run's backends', from ``/proc``) and the WAL it wrote, per row,
for the recording and for the apply.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import sessionmaker

from benchmarks.cpu import CpuMeter, postgres_pids
from benchmarks.infra import Cleanup, add_database_arguments, count, counts, fresh_database
from services._status import batches, jobs_repo
from services._status import repo as status_repo
from services._status.models import StatusBase
from services.infra.db import build_engine

CHUNK = 1_000
TARGETS = ("active", "suspended")


class Statements:
    """Seconds spent in each kind of statement (its verb and table), while ``on``."""

    def __init__(self, engine) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.on = False
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    @staticmethod
    def kind(statement: str) -> str:
        verb = statement.split(None, 1)[0].upper() if statement.strip() else "?"
        table = re.search(r"(?i)\b(?:INTO|UPDATE|FROM)\s+\"?(\w+)", statement)
        return f"{verb} {table.group(1)}" if table else verb

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        started = conn.info.pop("started", None)
        if self.on and started is not None:
            kind = self.kind(statement)
            self.seconds[kind] += time.perf_counter() - started
            self.calls[kind] += 1

    def take(self) -> dict[str, float]:
        """Seconds per kind of statement (with its number of calls) since the last take."""
        spent = {f"{kind} ({self.calls[kind]:,} calls)": seconds for kind, seconds in self.seconds.items()}
        self.seconds.clear()
        self.calls.clear()
        return spent


class Server:
    """PostgreSQL's CPU (its own processes and this database's backends) and the WAL it wrote,
    per row, between ``start()`` and ``stop()``."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.meter = CpuMeter({"postgres": lambda: postgres_pids([engine.url.database])})
        self.wal = 0

    def _wal(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").scalar())

    def start(self) -> None:
        self.wal = self._wal()
        self.meter.start()

    def stop(self, rows: int, phase: str) -> dict:
        seconds = self.meter.stop()["postgres"] / 100 * self.meter.elapsed
        return {
            f"server CPU, {phase}, µs/row": seconds / rows * 1e6,
            f"WAL, {phase}, bytes/row": (self._wal() - self.wal) / rows,
        }


def one_run(uri: str, rows: int, students: int, batch_size: int, statements: bool) -> tuple[float, float, dict]:
    """Seconds to record ``rows`` job rows, and to apply them ``batch_size`` at a time; with
    ``statements``, the apply's seconds per kind of statement and in commits."""
    engine = build_engine(uri)
    timings = Statements(engine)
    try:
        StatusBase.metadata.create_all(engine)
        db = sessionmaker(bind=engine, expire_on_commit=False)
        with db.begin() as session:
            for student_id in range(1, students + 1):
                status_repo.ensure_student(session, student_id)
        job = jobs_repo.create(db, None, "benchmark")
        table = [
            [n, (n - 1) % students + 1, TARGETS[((n - 1) // students) % 2], "applier benchmark"]
            for n in range(1, rows + 1)
        ]
        server = Server(engine) if statements and engine.dialect.name == "postgresql" else None
        server_spent = {}
        if server:
            server.start()
        timings.on = statements
        started, cpu_started = time.perf_counter(), time.process_time()
        for first in range(0, rows, CHUNK):
            with db.begin() as session:
                jobs_repo.add_rows(session, job.job_id, job.upload, table[first : first + CHUNK], [])
        recorded = time.perf_counter() - started
        record_cpu = time.process_time() - cpu_started
        timings.on = False
        recording = timings.take()
        recording["the rest (Python, COPY, COMMIT)"] = recorded - sum(recording.values())
        with db.begin() as session:
            jobs_repo.seal(session, job.job_id, job.upload, rows)
        if engine.dialect.name == "postgresql":  # as the service does after a large job's upload
            with engine.connect() as connection:
                connection.exec_driver_sql("ANALYZE status_requests")
        if server:
            server_spent.update(server.stop(rows, "record"))
            server.start()
        timings.on = statements
        started, applied, committing = time.perf_counter(), 0, 0.0
        cpu_started = time.process_time()
        while True:
            with db.begin() as session:
                result = batches.apply_pending(session, batch_size)
                commit_started = time.perf_counter()
            committing += time.perf_counter() - commit_started
            if not result.handled:
                break
            applied += result.handled
        elapsed = time.perf_counter() - started
        apply_cpu = time.process_time() - cpu_started
        if server:
            server_spent.update(server.stop(rows, "apply"))
        if applied != rows or result.rejected:
            raise RuntimeError(f"{applied:,} of {rows:,} rows applied")
        spent = timings.take()
        spent["COMMIT"] = committing
        # the rest: the applier's Python, and COPY (psycopg2's copy_expert passes by no cursor event)
        spent["the rest (Python, COPY)"] = elapsed - sum(spent.values())
        spent["recording"] = recording
        # this process's CPU (on SQLite the database's work too; fsyncs and other processes not)
        spent["cpu"] = {
            "process CPU, record, µs/row": record_cpu / rows * 1e6,
            "process CPU, apply, µs/row": apply_cpu / rows * 1e6,
        }
        spent["server"] = server_spent
        return recorded, elapsed, spent if statements else {}
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=count, default=100_000)
    parser.add_argument("--students", type=count, default=512)
    parser.add_argument("--batch-sizes", type=counts, default=[500, 2000], help="comma-separated")
    add_database_arguments(parser)
    parser.add_argument("--statements", action="store_true", help="the apply's time per kind of statement")
    args = parser.parse_args()
    sizes = args.batch_sizes
    print(f"{args.backend}:")
    print("| batch | rows | record rows/s | record µs/row | apply rows/s | apply µs/row |\n|--:|--:|--:|--:|--:|--:|")
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="mensageria-applier-") as workdir:
            for size in sizes:
                uri = fresh_database(args, cleanup, Path(workdir), "mensageria_bench_applier")
                recorded, applied, spent = one_run(uri, args.rows, args.students, size, args.statements)
                cleanup.close()
                print(
                    f"| {size:,} | {args.rows:,} | {args.rows / recorded:,.0f} | {recorded / args.rows * 1e6:.1f} "
                    f"| {args.rows / applied:,.0f} | {applied / args.rows * 1e6:.1f} |"
                )
                server = {**spent.pop("cpu", {}), **spent.pop("server", {})}
                for kind, seconds in sorted(spent.pop("recording", {}).items(), key=lambda item: -item[1]):
                    print(f"    record: {kind}: {seconds / args.rows * 1e6:.1f} µs/row")
                for kind, seconds in sorted(spent.items(), key=lambda item: -item[1]):
                    print(f"    {kind}: {seconds / args.rows * 1e6:.1f} µs/row ({seconds / applied:.0%} of the apply)")
                for name, value in server.items():
                    print(f"    {name}: {value:,.1f}")
    finally:
        cleanup.close()


if __name__ == "__main__":
    main()
