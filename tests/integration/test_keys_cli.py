"""``python -m tools.keys``: against the configured database, with nothing else running."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.access import keys
from tests.conftest import API_KEY_SECRET

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(db_uris) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.endswith("_SECRET")}
    return {
        **environment,
        "GATEWAY_DB_URI": db_uris["gateway:GatewayBase"],
        "API_KEY_SECRET": API_KEY_SECRET,
        "PYTHONWARNINGS": "ignore",
    }


def keys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.keys", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_create_list_revoke(env):
    created = keys_cli(env, "create", "--name", "secretaria web app", "--scopes", "students:read,status:write")
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    parsed = keys.parse(key)
    assert parsed is not None and key.startswith("msk_"), created.stdout
    assert created.stdout.count(key) == 1 and created.stderr == ""

    listed = keys_cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(parsed.key_id)]
    assert "secretaria web app" in row and "students:read,status:write" in row and row.endswith("False")
    assert parsed.secret not in listed.stdout

    revoked = keys_cli(env, "revoke", parsed.key_id)
    assert revoked.returncode == 0 and revoked.stdout.startswith(f"revoked key {parsed.key_id}")
    [row] = [line for line in keys_cli(env, "list").stdout.splitlines() if line.startswith(parsed.key_id)]
    assert row.endswith("True")


def test_expiry_is_shown(env):
    created = keys_cli(env, "create", "--name", "temp", "--scopes", "admin", "--expires-in", "30")
    assert created.returncode == 0, created.stderr
    assert "expires 20" in created.stdout.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--name", "x", "--scopes", "students:reed"), "unknown scope(s) students:reed"),
        (("create", "--name", " ", "--scopes", "admin"), "a key's name: Must not be blank."),
        (("create", "--name", "x", "--scopes", ","), "give at least one scope"),
        (("revoke", "nosuchkey000"), "no key with id nosuchkey000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(env, args, message):
    result = keys_cli(env, *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tools.keys: ")
    assert message in result.stderr and "Traceback" not in result.stderr


def test_without_the_secret_it_names_the_variable(env):
    result = keys_cli({**env, "API_KEY_SECRET": ""}, "list")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "API_KEY_SECRET is not set" in result.stderr


def test_first_run_makes_one_admin_key_once(env, tmp_path):
    key_file = tmp_path / "data" / "admin.key"
    first = keys_cli(env, "first-run", "--key-file", str(key_file))
    assert first.returncode == 0, first.stderr
    assert (
        first.stdout.strip()
        == f"mensageria: the admin API key is in {key_file} (export MENSAGERIA_KEY=$(cat {key_file}))"
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert keys.parse(key) is not None

    again = keys_cli(env, "first-run", "--key-file", str(key_file))
    assert again.returncode == 0 and again.stdout == first.stdout
    assert key_file.read_text().strip() == key  # reused, not replaced
    listed = keys_cli(env, "list").stdout.splitlines()
    assert len(listed) == 2 and listed[1].split()[1:3] == ["admin", "admin"]


def test_first_run_leaves_a_database_with_keys_alone(env, tmp_path):
    assert keys_cli(env, "create", "--name", "existing", "--scopes", "admin").returncode == 0
    key_file = tmp_path / "admin.key"
    result = keys_cli(env, "first-run", "--key-file", str(key_file))
    assert result.returncode == 0 and result.stdout == "" and not key_file.exists()
