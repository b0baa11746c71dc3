"""Check a mensageria certificate: valid, revoked or invalid, and why.

    python -m tools.verify_certificate certificate.pdf
    python -m tools.verify_certificate certificate.jwt --jwks jwks.json --status-list status-list.jwt
    python -m tools.verify_certificate https://school.example/certificates/CODE
    python -m tools.verify_certificate CODE --base-url https://school.example

SOURCE is a certificate PDF (its attached credential is checked), a file holding the credential
(compact JWS), a verification URL, or a code (with ``--base-url``). The signature is checked
against the issuer's public keys: ``--jwks FILE``, or fetched from the key's address, which must be
on the issuer's own site. Revocation is checked against the issuer's signed status list:
``--status-list FILE``, or fetched. With both files nothing is fetched (``--offline`` makes sure).

Prints VALID, REVOKED or INVALID on the first line, then the certificate and the reasons
(``--json``: one JSON object). Exit status: 0 valid, 1 revoked, 2 invalid, 3 not checkable
(a file or an address that cannot be read).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import requests
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from services import credentials

VALID, REVOKED, INVALID, UNCHECKABLE = 0, 1, 2, 3
CODE = re.compile(r"^[A-Za-z0-9_-]{32}$")
TIMEOUT = 10


class Uncheckable(Exception):
    """A source, key set or status list that cannot be read (not a verdict on the certificate)."""


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)  # a broken PDF is reported once, below
    parser = argparse.ArgumentParser(prog="python -m tools.verify_certificate", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a PDF, a credential (JWT) file, a verification URL or a code")
    parser.add_argument("--jwks", help="the issuer's public keys (JWK Set JSON file): no key is fetched")
    parser.add_argument("--status-list", help="the issuer's status list (JWT file): no list is fetched")
    parser.add_argument("--base-url", default="http://localhost:8000", help="the issuer's address, for a code")
    parser.add_argument("--offline", action="store_true", help="fetch nothing (needs --jwks and --status-list)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    args = parser.parse_args(_source_last(sys.argv[1:] if argv is None else argv))
    if args.offline and not (args.jwks and args.status_list):
        parser.error("--offline needs --jwks and --status-list")
    try:
        verdict = check(args)
    except Uncheckable as error:
        print(f"cannot check: {error}", file=sys.stderr)
        return UNCHECKABLE
    report(verdict, args.json)
    return {"valid": VALID, "revoked": REVOKED}.get(verdict.state, INVALID)


def _source_last(argv: list[str]) -> list[str]:
    """A certificate code may start with "-" (URL-safe base64): put it after "--" so that it is not
    read as an option."""
    codes = [arg for arg in argv if arg.startswith("-") and CODE.match(arg)]
    if not codes or "--" in argv:
        return argv
    return [arg for arg in argv if arg not in codes] + ["--", *codes]


def check(args: argparse.Namespace) -> credentials.Verdict:
    token = read_credential(args.source, args.base_url, offline=args.offline)
    try:
        header, payload = credentials.unverified(token)
    except credentials.CredentialError as error:
        return credentials.Verdict("invalid", [str(error)])
    if args.jwks:
        jwks = _json_file(args.jwks, "key set")
    else:
        try:
            jwks = _issuer_keys(header, payload)
        except credentials.CredentialError as error:
            return credentials.Verdict("invalid", [str(error)])
    if args.status_list:
        listing = _text_file(args.status_list, "status list")

        def status_list(url: str) -> str:
            return listing
    else:

        def status_list(url: str) -> str:
            return _fetch(url, "status list").text

    try:
        return credentials.verify(token, jwks, status_list)
    except Uncheckable:
        raise
    except Exception as error:  # whatever a hostile file holds, the answer is a verdict, not a crash
        return credentials.Verdict("invalid", [f"the credential cannot be read ({type(error).__name__}: {error})"])


def read_credential(source: str, base_url: str, offline: bool = False) -> str:
    """The compact JWS that ``source`` is or carries."""
    path = Path(source)
    if path.is_file():
        data = _read(path, "credential")
        return from_pdf(data) if data.startswith(b"%PDF") else data.decode("utf-8", "replace").strip()
    if offline:
        raise Uncheckable(f"{source} is not a file, and --offline fetches nothing")
    if source.startswith(("http://", "https://")):
        parts = urlsplit(source)
        match = re.search(r"/certificates/([A-Za-z0-9_-]{32})", parts.path)
        if not match:
            raise Uncheckable(f"{source} is not a certificate's address (…/certificates/CODE)")
        base_url, code = f"{parts.scheme}://{parts.netloc}", match.group(1)
    elif CODE.match(source):
        code = source
    else:
        raise Uncheckable(f"{source} is not a file, an address or a certificate code")
    return _fetch(f"{base_url.rstrip('/')}/certificates/{code}/credential", "credential").text.strip()


def from_pdf(data: bytes) -> str:
    """The credential a certificate PDF carries as an attached ``.jwt`` file."""
    try:
        attachments = PdfReader(io.BytesIO(data)).attachments
        files = {name: attachments[name] for name in attachments}
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise Uncheckable(f"the PDF cannot be read ({error})") from None
    for name, contents in sorted(files.items()):
        if name.endswith(".jwt") and contents:
            return contents[0].decode("utf-8", "replace").strip()
    raise Uncheckable("the PDF carries no credential (.jwt attachment); it cannot prove anything by itself")


def _issuer_keys(header: dict, payload: dict) -> dict:
    """The JWK Set at the ``kid``'s address, if that address is on the issuer's own site."""
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid.startswith(("http://", "https://")):
        raise credentials.CredentialError("the JWS header names no key address (kid); pass --jwks")
    issuer = payload.get("issuer")
    sites = {_origin(issuer.get(k)) for k in ("id", "url")} if isinstance(issuer, dict) else {_origin(issuer)}
    if _origin(kid) not in sites:
        issuer_sites = ", ".join(sorted(filter(None, sites))) or "none"
        raise credentials.CredentialError(
            f"the signing key is published at {_origin(kid)}, not on the issuer's site ({issuer_sites}); "
            "pass --jwks with the issuer's keys"
        )
    try:
        return _fetch(kid.partition("#")[0], "issuer's keys").json()
    except ValueError:
        raise Uncheckable("the issuer's key set is not JSON") from None


def _origin(url: object) -> str | None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _fetch(url: str, what: str) -> requests.Response:
    try:
        response = requests.get(url, timeout=TIMEOUT, headers={"Accept": "application/vc+jwt, application/json"})
    except requests.RequestException as error:
        raise Uncheckable(f"the {what} at {url} cannot be fetched ({type(error).__name__})") from None
    if response.status_code != 200:
        raise Uncheckable(f"the {what} at {url} answered {response.status_code}")
    return response


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise Uncheckable(f"the {what} file {path} cannot be read ({error.strerror})") from None


def _text_file(name: str, what: str) -> str:
    return _read(Path(name), what).decode("utf-8", "replace").strip()


def _json_file(name: str, what: str) -> dict:
    try:
        return json.loads(_read(Path(name), what))
    except ValueError:
        raise Uncheckable(f"the {what} file {name} is not JSON") from None


def summary(credential: dict | None) -> dict:
    if not credential:
        return {}
    subject = credential.get("credentialSubject") or {}
    names = [i.get("identityHash") for i in subject.get("identifier") or [] if i.get("identityType") == "name"]
    issuer = credential.get("issuer")
    return {
        "name": names[0] if names else None,
        "course": (subject.get("achievement") or {}).get("name"),
        "issuer": issuer.get("name") if isinstance(issuer, dict) else issuer,
        "issuer_id": credential.get("iss"),
        "issued": credential.get("validFrom"),
        "credential": credential.get("id"),
    }


def report(verdict: credentials.Verdict, as_json: bool) -> None:
    details = summary(verdict.credential)
    if as_json:
        print(json.dumps({"state": verdict.state, "reasons": verdict.reasons, **details}, ensure_ascii=False))
        return
    print(verdict.state.upper())
    for label, key in (("Name", "name"), ("Course", "course"), ("Issuer", "issuer"), ("Issued", "issued")):
        if details.get(key):
            print(f"{label}: {details[key]}")
    for reason in verdict.reasons:
        print(f"- {reason}")


if __name__ == "__main__":
    sys.exit(main())
