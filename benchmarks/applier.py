"""The status service's applier alone, on a SQLite file: a bulk job's rows recorded, then applied.

    .venv/bin/python -m benchmarks.applier [--rows 100000] [--students 512] [--batch-sizes 500,2000]

No broker and no other process: what one core does with the database side of (d) — the rows
recorded as ``status.add_job_rows`` records them (1,000 a transaction), the job sealed, then
``batches.apply_pending`` in transactions of each batch size until nothing is pending (statuses,
history rows and the outbox rows of the events, synced commits as the service makes them). Every
row is a real transition (each student goes ``active``, ``suspended``, ``active``, …). Prints rows/s
and µs per row for the recording and for the apply; against (d), the rest is the system around it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from services._status import batches, jobs_repo
from services._status import repo as status_repo
from services._status.models import StatusBase
from services.infra.db import build_engine

CHUNK = 1_000
TARGETS = ("active", "suspended")


def one_run(workdir: Path, rows: int, students: int, batch_size: int) -> tuple[float, float]:
    """Seconds to record ``rows`` job rows, and to apply them ``batch_size`` at a time."""
    engine = build_engine(f"sqlite:///{workdir}/status-{batch_size}.db")
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
        started = time.perf_counter()
        for first in range(0, rows, CHUNK):
            with db.begin() as session:
                jobs_repo.add_rows(session, job.job_id, job.upload, table[first : first + CHUNK], [])
        recorded = time.perf_counter() - started
        with db.begin() as session:
            jobs_repo.seal(session, job.job_id, job.upload, rows)
        started, applied = time.perf_counter(), 0
        while True:
            with db.begin() as session:
                result = batches.apply_pending(session, batch_size)
            if not result.handled:
                break
            applied += result.handled
        elapsed = time.perf_counter() - started
        if applied != rows or result.rejected:
            raise RuntimeError(f"{applied:,} of {rows:,} rows applied")
        return recorded, elapsed
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--students", type=int, default=512)
    parser.add_argument("--batch-sizes", default="500,2000", help="comma-separated")
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print("| batch | rows | record rows/s | record µs/row | apply rows/s | apply µs/row |\n|--:|--:|--:|--:|--:|--:|")
    with tempfile.TemporaryDirectory(prefix="mensageria-applier-") as workdir:
        for size in sizes:
            recorded, applied = one_run(Path(workdir), args.rows, args.students, size)
            print(
                f"| {size:,} | {args.rows:,} | {args.rows / recorded:,.0f} | {recorded / args.rows * 1e6:.1f} "
                f"| {args.rows / applied:,.0f} | {applied / args.rows * 1e6:.1f} |"
            )


if __name__ == "__main__":
    main()
