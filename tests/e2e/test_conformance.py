"""The gateway does what its OpenAPI document says, checked by schemathesis.

Schemathesis reads ``GET /openapi.json`` and sends the gateway requests made from it, in
every phase: the document's examples, coverage of each keyword's edges, random
fuzzing (valid and invalid requests) and stateful sequences that feed one response's
ids into the next request. Every check runs but the ones about authentication:
no 5xx; status codes, content types, headers and bodies as documented; every
request the schema allows is accepted and every one it forbids is refused; a
deleted student stays gone. One failure fails the test.

It runs as a command (``schemathesis run``) against a system of its own (SQLite, a
vhost of its own): the generator creates and deletes students at ids it picks, which
must never meet the other tests' data, and it runs outside the eventlet-patched test
process. The seed is fixed, so a failure repeats with the command printed below.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_db_uris
from tests.e2e.support import System, running_system

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
SEED = 20260101
MAX_EXAMPLES = 150  # per operation and phase; about 2,900 requests in all
MIN_REQUESTS = 2_000
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# object-level authorization (one user's objects hidden from another) is not this API's model:
# a key's scopes cover every student (tests/e2e/test_access.py checks keys and scopes)
EXCLUDED_CHECKS = ("object_level_authorization",)
RUN_TIMEOUT = 360.0  # a guard against a hung run, not a speed check: ~100 s on 2 busy cores
# Statuses that accept a valid request: schemathesis's own list, and 412 for an If-Match
# naming another version (a schema cannot say which version is current).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def system(request, rabbit_manager, amqp_uri, tmp_path_factory) -> Iterator[System]:
    """This module's own system (replacing the package's), with the default body limit:
    the schema lets a name be 200 characters, which as JSON escapes exceed the 4 KiB
    the other e2e tests set."""
    log_dir = tmp_path_factory.mktemp("e2e-conformance")
    db_uris = make_db_uris("sqlite", log_dir, request)
    with running_system("sqlite", rabbit_manager, amqp_uri, db_uris, log_dir, MAX_BODY_BYTES="65536") as system:
        yield system


def schemathesis_command(base_url: str, key: str, config: Path, reports: Path) -> list[str]:
    return [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{base_url}/openapi.json",
        "--seed",
        str(SEED),
        "--header",
        f"Authorization: Bearer {key}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        ",".join(PHASES),
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "json",
        "--report-json-path",
        str(reports / "report.json"),
    ]


def failures_section(output: str) -> str:
    """The part of schemathesis's output that shows each error and failure, and how to reproduce it."""
    found = [at for at in (output.find("=== ERRORS ==="), output.find("=== FAILURES ===")) if at >= 0]
    return output[output.rfind("\n", 0, min(found)) + 1 :] if found else output


def summary(report: dict) -> str:
    lines = [f"{report['test_cases']['generated']} generated test cases in {report['running_time']:.1f} s"]
    for phase, result in report["phases"].items():
        lines.append(f"  {phase}: {result['status']}")
    for failure in report["failures"]:
        operations = ", ".join(failure["operations"])
        lines.append(f"  {failure['code']} {failure['title']} ({failure['count']}): {operations}")
    for error in report["errors"]:
        lines.append(f"  error: {json.dumps(error)}")
    return "\n".join(lines)


def test_the_gateway_does_what_its_openapi_document_says(system: System, tmp_path, record_property, capsys) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = schemathesis_command(system.base_url, system.admin_key, config, tmp_path)
    started = time.monotonic()
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    report_path = tmp_path / "report.json"
    assert report_path.exists(), f"schemathesis wrote no report (exit code {run.returncode}):\n{output}"
    report = json.loads(report_path.read_text())

    generated = report["test_cases"]["generated"]
    record_property("schemathesis_version", report["schemathesis_version"])
    record_property("generated_test_cases", generated)
    record_property("seconds", round(elapsed, 1))
    with capsys.disabled():
        print(f"\nschemathesis {report['schemathesis_version']}, seed {SEED}: {summary(report)}")

    assert run.returncode == 0 and not report["failures"] and not report["errors"], (
        f"the gateway and its OpenAPI document disagree (exit code {run.returncode}):\n"
        f"{summary(report)}\n\n{failures_section(output)}"
    )
    assert all(report["phases"][phase]["status"] == "success" for phase in PHASES), summary(report)
    assert generated >= MIN_REQUESTS, f"only {generated} requests generated: {summary(report)}"
