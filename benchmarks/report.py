"""What the runner makes of the rows: ratios, the printed table, and the line of
``results/results.csv`` with where they were measured (commit, machine)."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.core import Row
from benchmarks.infra import ROOT

RESULTS = Path(__file__).resolve().parent / "results" / "results.csv"
SEED_BASELINE = "Celery, the seed's design"  # (f)'s baseline row starts with this; its completion rows with "course"
CSV_FIELDS = [
    "timestamp",
    "commit",
    "tree",
    "nproc",
    "cpu_model",
    "ram_gib",
    "run",
    "key",
    "scenario",
    "backend",
    "concurrency",
    "ops_per_s",
    "count",
    "p50_ms",
    "p99_ms",
    "ratio_a",
    "ratio_b",
    "notes",
]


def add_ratios(rows: list[Row]) -> None:
    """ops/s of each row over (a)'s, and over (b)'s on the same backend (for c, d, e; a row's
    backend may name its broker set-up after a ``/``: the database is what (b) is matched on; for
    (f)'s completions, over its own baseline: the seed's design in Celery)."""
    raw = next((row.ops for row in rows if row.key == "a"), None)
    celery = {row.backend: row.ops for row in rows if row.key == "b"}
    seed = {row.backend: row.ops for row in rows if row.key == "f" and row.scenario.startswith(SEED_BASELINE)}
    for row in rows:
        if raw and row.key != "a":
            row.ratio_a = row.ops / raw
        database = row.backend.split("/")[0]
        if row.key in ("c", "d", "e") and celery.get(database):
            row.ratio_b = row.ops / celery[database]
        if row.key == "f" and row.scenario.startswith("course") and seed.get(database):
            row.ratio_b = row.ops / seed[database]  # completions/s over the seed's design


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def table(rows: list[Row]) -> str:
    header = ("", "scenario", "backend", "conc.", "ops/s", "p50 ms", "p99 ms", "÷ (a)", "÷ (b)")
    body = [
        (
            row.key,
            row.scenario,
            row.backend,
            str(row.concurrency or ""),
            _num(row.ops),
            _num(row.p50_ms, 1),
            _num(row.p99_ms, 1),
            _ratio(row.ratio_a),
            _ratio(row.ratio_b),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {3, 4, 5, 6, 7, 8}

    def fmt(line) -> str:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), rule, *map(fmt, body)])


def append_csv(path: Path, rows: list[Row], run: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    commit, tree = git_commit()
    machine = machine_info()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "timestamp": stamp,
                    "commit": commit,
                    "tree": tree,
                    **machine,
                    "run": run,
                    "key": row.key,
                    "scenario": row.scenario,
                    "backend": row.backend,
                    "concurrency": row.concurrency or "",
                    "ops_per_s": f"{row.ops:.1f}",
                    "count": row.count,
                    "p50_ms": "" if row.p50_ms is None else f"{row.p50_ms:.2f}",
                    "p99_ms": "" if row.p99_ms is None else f"{row.p99_ms:.2f}",
                    "ratio_a": "" if row.ratio_a is None else f"{row.ratio_a:.4f}",
                    "ratio_b": "" if row.ratio_b is None else f"{row.ratio_b:.4f}",
                    "notes": row.notes,
                }
            )


def machine_info() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = f"{int(line.split()[1]) / 1024 / 1024:.1f}"
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu_model": model, "ram_gib": ram_gib}


def git_commit() -> tuple[str, str]:
    """(short commit, "clean" | "dirty": tracked files changed since it) of the work tree."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD"), "dirty" if git(
            "status", "--porcelain", "--untracked-files=no"
        ) else "clean"
    except (OSError, subprocess.CalledProcessError):
        return "unknown", ""
