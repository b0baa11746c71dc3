"""Recording single status requests, alone, on a table that already holds many: random ids against
time-ordered ones.

    .venv/bin/python -m benchmarks.recording [--earlier 100000] [--requests 60000] [--batch 1000]
        [--backend sqlite|postgresql] [--postgres-uri URI]

``repo.submit_many`` as the status service's batched handler calls it (``--batch`` requests a
transaction, synced commits), after ``--earlier`` requests already recorded, twice per kind of id:
request and correlation ids random (version 4, as the gateway issued them before) and as the gateway
and the status service make them now (request ids from ``gateway.request_ids.issue``, correlation
ids from ``correlation.new_id``). Random keys land all over the ``id`` and ``correlation_id``
indexes, so each commit writes a page of each per request; ordered ones land together at the end.
No broker, no other process. PostgreSQL: a database of its own per run, dropped after.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from benchmarks.infra import Cleanup, add_database_arguments, count, fresh_database
from gateway import request_ids
from services._status import repo
from services._status.models import StatusBase
from services.infra import correlation
from services.infra.db import build_engine

KINDS = {
    "random (version 4)": lambda: (str(uuid.uuid4()), str(uuid.uuid4())),
    "time-ordered (as issued now)": lambda: (request_ids.issue("benchmark", 1), correlation.new_id()),
}


def requests(count: int, ids) -> list[dict]:
    commands = []
    for n in range(count):
        request_id, correlation_id = ids()
        commands.append(
            {
                "request_id": request_id,
                "student_id": n % 512 + 1,
                "status": "active",
                "reason": "recording benchmark",
                "actor": "benchmark",
                "correlation_id": correlation_id,
            }
        )
    return commands


def one_run(uri: str, ids, earlier: int, count: int, batch: int) -> float:
    """Microseconds per request recorded, after ``earlier`` recorded the same way."""
    engine = build_engine(uri)
    try:
        StatusBase.metadata.create_all(engine)
        db = sessionmaker(bind=engine, expire_on_commit=False)
        for _ in range(0, earlier, batch):
            repo.submit_many(db, requests(batch, ids))
        chunks = [requests(batch, ids) for _ in range(0, count, batch)]
        started = time.perf_counter()
        for chunk in chunks:
            repo.submit_many(db, chunk)
        return (time.perf_counter() - started) / (len(chunks) * batch) * 1e6
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--earlier", type=int, default=100_000)
    parser.add_argument("--requests", type=count, default=60_000)
    parser.add_argument("--batch", type=count, default=1_000)
    parser.add_argument("--runs", type=count, default=2, help="runs per kind of id, alternating")
    add_database_arguments(parser)
    args = parser.parse_args()
    print(f"{args.backend}, {args.earlier:,} earlier requests, {args.requests:,} timed, {args.batch:,} a transaction:")
    print("| ids | µs per request recorded, each run |\n|---|---|")
    results: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="mensageria-recording-") as workdir:
            for _ in range(args.runs):
                for kind, ids in KINDS.items():
                    uri = fresh_database(args, cleanup, Path(workdir), "mensageria_bench_recording")
                    results[kind].append(one_run(uri, ids, args.earlier, args.requests, args.batch))
                    cleanup.close()
    finally:
        cleanup.close()
    for kind, figures in results.items():
        print(f"| {kind} | {' / '.join(f'{figure:.1f}' for figure in figures)} |")


if __name__ == "__main__":
    main()
