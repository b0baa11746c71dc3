"""Open Badges 3.0 credentials: built to the OB 3.0 schema, signed as OB 3.0's JWT proof format
requires (checked with PyJWT, another JOSE library than the joserfc that signs), status lists as
the Bitstring Status List spec encodes them, and every tampering reported, never raised."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema_rs
import jwt as pyjwt
import pytest

from services import credentials
from services.credentials import CredentialError, Issuer

SCHEMA = Path(__file__).parents[1] / "vendor/openbadges-3.0-c73e966/achievementcredential.schema.json"
BASE = "https://school.example"
JWKS_URL = f"{BASE}/.well-known/jwks.json"
LIST_URL = f"{BASE}/credentials/status/1"
ISSUER = Issuer(id=f"{BASE}/issuer", name="Escola Exemplo", url=BASE)
ISSUED = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)
TEXTS = {"name": "Certificate", "description": "d", "achievement_description": "a", "criteria": "c"}


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> credentials.SigningKey:
    path = tmp_path_factory.mktemp("keys") / "signing.pem"
    credentials.generate_signing_key(path, bits=2048)
    return credentials.load_signing_key(path, JWKS_URL)


@pytest.fixture(scope="module")
def other_key(tmp_path_factory) -> credentials.SigningKey:
    path = tmp_path_factory.mktemp("other") / "signing.pem"
    credentials.generate_signing_key(path, bits=2048)
    return credentials.load_signing_key(path, JWKS_URL)


def credential(index: int = 7, **changes) -> dict:
    built = credentials.build_credential(
        issuer=ISSUER,
        credential_id=f"{BASE}/certificates/{'c' * 32}/credential",
        subject_id="urn:uuid:6f1c4a4e-3b0e-4bb8-9a70-0c9f3f1f0a11",
        name="João Conceição",
        email="Joao@School.example",
        course="Biologia Marinha",
        issued_at=ISSUED,
        status_list_url=LIST_URL,
        status_index=index,
        texts=TEXTS,
        salt="pepper",
    )
    built.update(changes)
    return built


def status_list(key, revoked=(), url=LIST_URL, issuer=ISSUER) -> str:
    return credentials.sign(
        credentials.build_status_list(issuer=issuer, list_url=url, revoked=revoked, published_at=ISSUED), key
    )


def jwks(*keys) -> dict:
    return {"keys": [k.public_jwk for k in keys]}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_the_credential_meets_the_open_badges_3_schema():
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    errors = [error.message for error in validator.iter_errors(credential())]
    assert errors == []
    subject = credential()["credentialSubject"]
    # the student: a salted hash of the e-mail (no address in clear) and the name
    email, name = subject["identifier"]
    assert email["identityHash"] == credentials.identity_hash("joao@school.example", "pepper")
    assert email["hashed"] is True and "school.example" not in json.dumps(email)
    assert (name["identityType"], name["identityHash"], name["hashed"]) == ("name", "João Conceição", False)
    assert credential()["validFrom"] == "2026-12-02T14:30:00Z"


def test_the_jwt_is_what_ob3s_jwt_proof_format_asks_for_checked_with_pyjwt(key):
    token = credentials.sign(credential(), key)
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": f"{JWKS_URL}#{key.thumbprint}", "typ": "JWT"}  # no other header
    public = pyjwt.PyJWKSet.from_dict(jwks(key))[header["kid"]].key
    claims = pyjwt.decode(token, public, algorithms=["RS256"], options={"require": ["iss", "jti", "nbf", "sub"]})
    assert claims["iss"] == ISSUER.id == claims["issuer"]["id"]
    assert claims["jti"] == claims["id"] and claims["sub"] == claims["credentialSubject"]["id"]
    assert claims["nbf"] == int(ISSUED.timestamp())
    assert claims["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert "d" not in key.public_jwk and key.public_jwk["kid"] == header["kid"]
    # and a token PyJWT signs with our key verifies here: the format is the standard one
    private = key.key.as_pem(private=True)
    theirs = pyjwt.encode(credentials.claims(credential()), private, algorithm="RS256", headers={"kid": header["kid"]})
    assert credentials.verify(theirs, jwks(key), lambda url: status_list(key)).state == "valid"


def test_valid_then_revoked_by_the_status_list(key):
    token = credentials.sign(credential(index=7), key)
    clear = credentials.verify(token, jwks(key), lambda url: status_list(key, revoked=[6, 8]))
    assert clear.state == "valid" and clear.ok and clear.credential["credentialSubject"]["achievement"]["name"]
    revoked = credentials.verify(token, jwks(key), lambda url: status_list(key, revoked=[7]))
    assert revoked.state == "revoked" and revoked.revocation["statusListIndex"] == "7"
    unchecked = credentials.verify(token, jwks(key))
    assert unchecked.state == "valid" and "revocation not checked" in unchecked.reasons[-1]


def test_the_bitstring_encoding_of_the_spec():
    encoded = credentials.encode_bits([0, 9, 131_071])
    assert encoded.startswith("u") and "=" not in encoded
    bits = credentials.decode_bits(encoded)
    assert len(bits) == 16_384 == credentials.STATUS_LIST_SIZE // 8  # 131,072 entries
    assert bits[0] == 0x80 and bits[1] == 0x40 and bits[-1] == 0x01  # index 0 is the left-most bit
    assert [i for i in range(credentials.STATUS_LIST_SIZE) if credentials.bit(bits, i)] == [0, 9, 131_071]
    with pytest.raises(CredentialError, match="outside"):
        credentials.encode_bits([131_072])
    with pytest.raises(CredentialError, match="cannot be decoded"):
        credentials.decode_bits("u!!!")


def _tampered_payload(token: str) -> str:
    header, payload, signature = token.split(".")
    changed = json.loads(base64.urlsafe_b64decode(payload + "=="))
    changed["credentialSubject"]["achievement"]["name"] = "Medicina"
    return ".".join([header, b64(changed), signature])


def _expired(key) -> str:
    old = credential(validFrom="2020-01-01T00:00:00Z", validUntil="2021-01-01T00:00:00Z")
    return credentials.sign(old, key)


@pytest.mark.parametrize(
    "make, reason",
    [
        (_tampered_payload, "signature does not verify"),
        (lambda token: ".".join([b64({"alg": "none", "typ": "JWT"}), token.split(".")[1], ""]), "unsigned (alg none)"),
        (lambda token: ".".join([b64({"alg": "HS256", "kid": "x"}), *token.split(".")[1:]]), "HS256 is not accepted"),
        (lambda token: token.split(".", 1)[1], "three parts"),
        (lambda token: "", "three parts"),
        (lambda token: "a.b.c", "not base64url JSON"),
        (lambda token: "bm90.anNvbg.c2ln", "not base64url JSON"),
        (lambda token: b64([1]) + "." + b64([2]) + ".x", "JSON objects"),
    ],
)
def test_tampered_tokens_are_invalid_with_the_reason(key, make, reason):
    verdict = credentials.verify(make(credentials.sign(credential(), key)), jwks(key), lambda url: status_list(key))
    assert verdict.state == "invalid" and reason in verdict.reasons[0], verdict.reasons


def test_a_signature_by_another_key_a_foreign_kid_and_expiry_are_invalid(key, other_key):
    forged = credentials.sign(credential(), credentials.SigningKey(other_key.key, "RS256", "x", key.kid))
    assert "signature does not verify" in credentials.verify(forged, jwks(key)).reasons[0]
    unknown = credentials.sign(credential(), other_key)
    assert "not among the issuer's published keys" in credentials.verify(unknown, jwks(key)).reasons[0]
    assert "expired at 2021-01-01T00:00:00Z" in credentials.verify(_expired(key), jwks(key)).reasons[0]
    future = credentials.sign(credential(validFrom="2099-01-01T00:00:00Z"), key)
    assert "not valid before" in credentials.verify(future, jwks(key)).reasons[0]
    leaked = credentials.verify(credentials.sign(credential(), key), {"keys": [{**key.public_jwk, "d": "secret"}]})
    assert "publishes a private key" in leaked.reasons[0]
    # both keys published (a rotation): both verify
    assert credentials.verify(unknown, jwks(key, other_key)).state == "valid"


def test_a_status_list_that_is_forged_foreign_or_mislabelled_is_invalid(key, other_key):
    token = credentials.sign(credential(), key)
    cases = {
        "signature does not verify": status_list(credentials.SigningKey(other_key.key, "RS256", "x", key.kid)),
        "not 'https://school.example/credentials/status/1'": status_list(key, url=f"{BASE}/credentials/status/2"),
        "not issued by the credential's issuer": status_list(key, issuer=Issuer("https://x.example", "X", BASE)),
        "three parts": "not a jwt",
    }
    for reason, listing in cases.items():
        verdict = credentials.verify(token, jwks(key), lambda url, listing=listing: listing)
        assert verdict.state == "invalid" and reason in verdict.reasons[0], verdict.reasons


def test_keys_that_cannot_sign_are_refused(tmp_path):
    (tmp_path / "text.pem").write_text("hello")
    small = tmp_path / "small.pem"
    credentials.generate_signing_key(small, bits=1024)
    public = tmp_path / "public.pem"
    credentials.generate_signing_key(tmp_path / "pair.pem", bits=2048)
    public.write_bytes(credentials.load_signing_key(tmp_path / "pair.pem", JWKS_URL).key.as_pem(private=False))
    for path, reason in [
        (tmp_path / "absent.pem", "cannot read"),
        (tmp_path / "text.pem", "not a PEM RSA or EC private key"),
        (small, "1024 bits"),
        (public, "public key"),
    ]:
        with pytest.raises(CredentialError, match=reason):
            credentials.load_signing_key(path, JWKS_URL)
    credentials.generate_signing_key(tmp_path / "new.pem")
    with pytest.raises(FileExistsError):  # a key is never overwritten
        credentials.generate_signing_key(tmp_path / "new.pem")
    assert (tmp_path / "new.pem").stat().st_mode & 0o777 == 0o600
    assert credentials.load_signing_key(tmp_path / "new.pem", JWKS_URL).alg == "RS256"
