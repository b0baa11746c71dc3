"""The verifier's command line: a code that starts with "-" is a code, not an option; a source that
cannot be read is exit 3 with one line, never a traceback."""

from __future__ import annotations

import socket

import pytest

from tools import verify_certificate

DASHED = "-vsEAlD0eHnhrKPg-UVpqbnREPe0aZ_9"  # URL-safe base64 may begin with "-"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_code_starting_with_a_dash_is_the_source(capsys):
    assert verify_certificate._source_last([DASHED, "--json"]) == ["--json", "--", DASHED]
    assert verify_certificate._source_last(["--jwks", "k.json", "x.pdf"]) == ["--jwks", "k.json", "x.pdf"]
    status = verify_certificate.main([DASHED, "--base-url", f"http://127.0.0.1:{closed_port()}"])
    assert status == verify_certificate.UNCHECKABLE
    error = capsys.readouterr().err
    assert error.startswith("cannot check: the credential at") and DASHED in error and "Traceback" not in error


def test_offline_needs_both_files(capsys, tmp_path):
    token = tmp_path / "c.jwt"
    token.write_text("a.b.c")
    with pytest.raises(SystemExit) as stop:
        verify_certificate.main([str(token), "--offline"])
    assert stop.value.code == 2
    assert "--offline needs --jwks and --status-list" in capsys.readouterr().err
    keys = tmp_path / "jwks.json"
    keys.write_text('{"keys": []}')
    assert verify_certificate.main([str(token), "--jwks", str(keys), "--status-list", str(token), "--offline"]) == 2
    assert capsys.readouterr().out.startswith("INVALID")
