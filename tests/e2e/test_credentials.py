"""Signed credentials over HTTP: public routes for the credential, the issuer's keys and status
lists; the verifier (``python -m tools.verify_certificate``) on a downloaded PDF, a code and a
URL, online and offline, before and after a revocation; the verification page for people."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import requests

from services import credentials, i18n
from tests.e2e.support import ROOT, System, assert_error, poll


def certify(system: System, unique: str, name: str = "Inês Araújo", **extra: str) -> dict:
    body = {"name": name, "email": f"ines.{unique}@example.org", "course": "Engenharia de Dados", **extra}
    accepted = system.post("/api/v1/certificate/", json=body)
    assert accepted.status_code == 202, accepted.text
    student = accepted.json()["student"]
    system.settled_request(accepted.json()["request_id"])
    [certificate] = poll(lambda: system.get(f"/students/{student['id']}/certificates").json(), bool)
    return {**certificate, "email": body["email"]}


def verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.verify_certificate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_credentials_keys_and_status_lists_are_public_and_the_verifier_checks_them(
    system: System, unique: str, tmp_path: Path
) -> None:
    certificate = certify(system, unique)
    code, anyone = certificate["code"], requests.Session()  # no API key: verification is public

    jwt = anyone.get(f"{system.base_url}/certificates/{code}/credential", timeout=10)
    assert jwt.status_code == 200 and jwt.headers["Content-Type"] == "application/vc+jwt"
    decoded = anyone.get(f"{system.base_url}/certificates/{code}/credential.json", timeout=10).json()
    assert decoded == credentials.unverified(jwt.text)[1]
    assert decoded["id"] == certificate["credential_url"] == f"{system.base_url}/certificates/{code}/credential"
    assert certificate["email"] not in jwt.text and certificate["email"] not in json.dumps(decoded)
    jwks = anyone.get(f"{system.base_url}/.well-known/jwks.json", timeout=10).json()
    status_url = decoded["credentialStatus"]["statusListCredential"]
    listing = anyone.get(status_url, timeout=10)
    assert listing.status_code == 200 and listing.headers["Content-Type"] == "application/vc+jwt"
    subject = anyone.get(status_url + ".json", timeout=10).json()["credentialSubject"]
    assert subject["type"] == "BitstringStatusList" and subject["statusPurpose"] == "revocation"
    assert credentials.verify(jwt.text, jwks, lambda url: anyone.get(url, timeout=10).text).state == "valid"
    issuer = anyone.get(f"{system.base_url}/issuer", timeout=10).json()
    assert issuer["id"] == decoded["issuer"]["id"] == decoded["iss"] and "Profile" in issuer["type"]

    pdf = tmp_path / "certificate.pdf"
    pdf.write_bytes(anyone.get(f"{system.base_url}/certificates/{code}.pdf", timeout=10).content)
    keys, old_list = tmp_path / "jwks.json", tmp_path / "status-before.jwt"
    keys.write_text(json.dumps(jwks))
    old_list.write_text(listing.text)
    for source in ([str(pdf)], [code, "--base-url", system.base_url], [f"{system.base_url}/certificates/{code}"]):
        result = verify(*source)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "VALID" and "Name: Inês Araújo" in lines and "Course: Engenharia de Dados" in lines
    offline = verify(str(pdf), "--jwks", str(keys), "--status-list", str(old_list), "--offline")
    assert offline.returncode == 0 and offline.stdout.startswith("VALID"), offline.stdout + offline.stderr

    revoked = system.post(f"/certificates/{code}/revocation", json={"reason": "issued in error"})
    assert revoked.status_code == 200, revoked.text
    online = verify(str(pdf), "--json")
    assert online.returncode == 1 and json.loads(online.stdout)["state"] == "revoked", online.stdout
    new_list = tmp_path / "status-after.jwt"
    new_list.write_text(anyone.get(status_url, timeout=10).text)
    after = verify(str(pdf), "--jwks", str(keys), "--status-list", str(new_list), "--offline")
    assert after.returncode == 1 and after.stdout.startswith("REVOKED")
    # offline, the list one holds is what one knows: the earlier list still says valid
    assert verify(str(pdf), "--jwks", str(keys), "--status-list", str(old_list), "--offline").returncode == 0

    # tampered: the payload changed under the issuer's signature
    header, payload, signature = jwt.text.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["credentialSubject"]["achievement"]["name"] = "Medicina"
    forged = tmp_path / "forged.jwt"
    forged.write_text(".".join([header, base64.urlsafe_b64encode(json.dumps(claims).encode()).decode(), signature]))
    result = verify(str(forged), "--jwks", str(keys), "--status-list", str(new_list))
    assert result.returncode == 2 and result.stdout.startswith("INVALID") and "signature" in result.stdout
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\nnot really")
    for source in (str(garbage), str(tmp_path / "absent.jwt"), "not-a-code"):
        result = verify(source)
        assert result.returncode == 3 and "Traceback" not in result.stderr and result.stderr.startswith("cannot check")


def test_status_list_and_credential_errors(system: System) -> None:
    assert_error(system.get("/credentials/status/999999"), 404, "STATUS_LIST_NOT_FOUND")
    assert_error(system.get("/credentials/status/999999.json"), 404, "STATUS_LIST_NOT_FOUND")
    assert_error(system.get("/credentials/status/abc"), 404, "NOT_FOUND")
    assert_error(system.get("/certificates/" + "A" * 32 + "/credential"), 404, "CERTIFICATE_NOT_FOUND")
    assert_error(system.get("/certificates/" + "A" * 32 + "/credential.json"), 404, "CERTIFICATE_NOT_FOUND")


class Page(HTMLParser):
    """The text of a page, its ``lang``, and the elements with an id (their text and attributes)."""

    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def __init__(self, html: str):
        super().__init__()
        self.lang, self.ids, self.text, self._stack = None, {}, [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang")
        if "id" in attrs:
            self.ids[attrs["id"]] = {"attrs": attrs, "text": ""}
        if tag not in self.VOID:
            self._stack.append((tag, attrs.get("id")))

    def handle_endtag(self, tag):
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        for _, element in self._stack:
            if element:
                self.ids[element]["text"] += data

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def page(system: System, path: str, **headers: str) -> tuple[requests.Response, Page]:
    response = requests.get(system.base_url + path, headers={"Accept": "text/html,*/*;q=0.8", **headers}, timeout=10)
    return response, Page(response.text)


def test_the_verification_page_for_people_in_their_language(system: System, unique: str) -> None:
    certificate = certify(system, unique, name="Renée Gonçalves")
    code = certificate["code"]
    issued = certificate["issued_at"]

    response, english = page(system, f"/certificates/{code}", **{"Accept-Language": "en-GB,en;q=0.8"})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"] and "Accept" in response.headers["Vary"]
    assert english.lang == "en" and english.ids["verdict"]["attrs"]["data-status"] == "valid"
    assert english.ids["name"]["text"] == "Renée Gonçalves" and english.ids["course"]["text"] == "Engenharia de Dados"
    assert english.ids["issued"]["text"] == i18n.format_date(_date(issued), "en")
    assert english.ids["pdf"]["attrs"]["href"] == certificate["pdf_url"]
    assert english.ids["credential"]["attrs"]["href"] == certificate["credential_url"]
    assert "tools.verify_certificate" in english.ids["offline"]["text"]
    assert certificate["email"] not in response.text and "@" not in english.all_text

    _, portuguese = page(system, f"/certificates/{code}", **{"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5"})
    assert portuguese.lang == "pt-BR" and portuguese.ids["issued"]["text"] == i18n.format_date(_date(issued), "pt_BR")
    assert " de " in portuguese.ids["issued"]["text"] and portuguese.ids["verdict"]["text"].strip() == "Válido"
    _, chosen = page(system, f"/certificates/{code}?lang=en", **{"Accept-Language": "pt-BR"})
    assert chosen.lang == "en"

    # programs still get JSON
    assert requests.get(f"{system.base_url}/certificates/{code}", timeout=10).json()["code"] == code
    as_json = requests.get(f"{system.base_url}/certificates/{code}", headers={"Accept": "application/json"}, timeout=10)
    assert as_json.json()["status"] == "valid"

    system.post(f"/certificates/{code}/revocation", json={"reason": "dados incorretos"})
    _, revoked = page(system, f"/certificates/{code}?lang=pt_BR")
    assert revoked.ids["verdict"]["attrs"]["data-status"] == "revoked"
    assert "dados incorretos" in revoked.ids["revocation"]["text"] and "Revogado" in revoked.all_text

    response, missing = page(system, "/certificates/" + "B" * 32)
    assert response.status_code == 404 and response.headers["Content-Type"].startswith("text/html")
    assert missing.ids["verdict"]["attrs"]["data-status"] == "not-found" and '"error"' not in response.text
    assert missing.ids["verdict"]["text"] == "No certificate has this code."


def _date(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
