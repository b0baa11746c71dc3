"""Open Badges 3.0 credentials: what a certificate says in signed, machine-checkable form.

The certificates service issues one ``OpenBadgeCredential`` per certificate (W3C Verifiable
Credentials Data Model 2.0 + the OB 3.0 context), signed as a compact JWS in OB 3.0's "JSON Web
Token Proof Format" (header ``alg``/``kid``/``typ: JWT``; claims ``iss``, ``jti``, ``nbf``,
``sub`` mirroring the credential). Revocation is a W3C Bitstring Status List, itself a signed
credential. ``tools.verify_certificate`` checks all of it, offline if given the keys and the list::

    key = load_signing_key("data/certificate-signing-key.pem", base_url)
    token = sign(build_credential(...), key)
    verdict = verify(token, jwks={"keys": [key.public_jwk]}, status_list=lambda url: list_token)
    verdict.state  # "valid" | "revoked" | "invalid"

Signing and verifying use joserfc; nothing here is hand-made cryptography. The module is pure:
no database, no network (the caller hands it keys and status lists).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey, import_key

CONTEXTS = [
    "https://www.w3.org/ns/credentials/v2",
    "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
]
STATUS_LIST_CONTEXTS = ["https://www.w3.org/ns/credentials/v2"]
CREDENTIAL_TYPES = ("OpenBadgeCredential", "AchievementCredential")  # OB 3.0 accepts either
MEDIA_TYPE = "application/vc+jwt"
# The Bitstring Status List recommendation's minimum (16 KiB): a list this long hides which
# credential a verifier asks about among many
STATUS_LIST_SIZE = 131_072
STATUS_PURPOSE = "revocation"
ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}  # by key type; OB 3.0 requires RS256 at least
ACCEPTED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
CLOCK_SKEW_SECONDS = 300


class CredentialError(ValueError):
    """A key or a credential that cannot be used; the message says why."""


@dataclass(frozen=True)
class Issuer:
    """The issuer profile a credential names (from configuration)."""

    id: str
    name: str
    url: str

    def profile(self) -> dict:
        return {"id": self.id, "type": ["Profile"], "name": self.name, "url": self.url}

    @classmethod
    def configured(cls, settings: Any) -> Issuer:
        """The issuer of ``CERTIFICATE_ISSUER_*`` (id: PUBLIC_BASE_URL/issuer, url: PUBLIC_BASE_URL by default)."""
        base = settings.public_base_url.rstrip("/")
        return cls(
            id=settings.certificate_issuer_id or f"{base}/issuer",
            name=settings.certificate_issuer_name,
            url=settings.certificate_issuer_url or base,
        )


@dataclass(frozen=True)
class SigningKey:
    """A private key, the ``kid`` URI that dereferences to its public half, and that half."""

    key: RSAKey | ECKey
    alg: str
    thumbprint: str
    kid: str

    @property
    def public_jwk(self) -> dict:
        return public_jwk(self.key.as_dict(private=False), self.kid, self.alg)


def key_id(jwks_url: str, thumbprint: str) -> str:
    """The ``kid`` of a key: the JWKS URL with the key's RFC 7638 thumbprint as fragment."""
    return f"{jwks_url}#{thumbprint}"


def public_jwk(jwk: dict, kid: str, alg: str) -> dict:
    """A public JWK as published: never any private member."""
    public = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    return {**public, "kid": kid, "alg": alg, "use": "sig"}


def load_signing_key(path: str | Path, jwks_url: str) -> SigningKey:
    """The PEM private key at ``path`` (RSA ≥ 2048 bits → RS256, EC P-256 → ES256)."""
    try:
        pem = Path(path).read_bytes()
    except OSError as error:
        raise CredentialError(f"cannot read the signing key {path}: {error.strerror}") from None
    key = None
    for kind in ALGORITHMS:  # joserfc wants the key type said, not guessed
        try:
            key = import_key(pem, kind)
            break
        except (JoseError, ValueError, TypeError):
            continue
    if key is None:
        raise CredentialError(f"the signing key {path} is not a PEM RSA or EC private key")
    if not key.is_private:
        raise CredentialError(f"the signing key {path} is a public key; a private key signs")
    if key.key_type == "RSA" and key.raw_value.key_size < 2048:
        raise CredentialError(f"the signing key {path} has {key.raw_value.key_size} bits; RSA needs 2048 or more")
    if key.key_type == "EC" and key.as_dict().get("crv") != "P-256":
        raise CredentialError(f"the signing key {path} is not on curve P-256")
    if key.key_type not in ALGORITHMS:
        raise CredentialError(f"the signing key {path} is {key.key_type}; use RSA or EC P-256")
    thumbprint = key.thumbprint()
    return SigningKey(key, ALGORITHMS[key.key_type], thumbprint, key_id(jwks_url, thumbprint))


def generate_signing_key(path: str | Path, bits: int = 3072) -> None:
    """Write a new RSA private key as PEM to ``path``, readable by its owner only (0600)."""
    key = RSAKey.generate_key(bits, private=True)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb", opener=lambda name, flags: os.open(name, flags, 0o600)) as out:
        out.write(key.as_pem(private=True))


# -- building ---------------------------------------------------------------------------------


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def identity_hash(email: str, salt: str) -> str:
    """OB 3.0's IdentityHash of an e-mail address: ``sha256$`` + hex of address + salt."""
    return "sha256$" + hashlib.sha256((email.strip().lower() + salt).encode()).hexdigest()


def achievement_id(issuer: Issuer, course: str) -> str:
    """A stable URN for a course of this issuer (the same achievement on every certificate)."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{issuer.id}#achievement/{course}"))


def build_credential(
    *,
    issuer: Issuer,
    credential_id: str,
    subject_id: str,
    name: str,
    email: str,
    course: str,
    issued_at: datetime,
    status_list_url: str,
    status_index: int,
    texts: dict[str, str],
    salt: str | None = None,
) -> dict:
    """An ``OpenBadgeCredential`` for a course completion. ``texts`` holds the person-readable
    ``name``, ``description`` and ``criteria`` (in the certificate's language)."""
    salt = salt if salt is not None else secrets.token_hex(16)
    return {
        "@context": list(CONTEXTS),
        "id": credential_id,
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": texts["name"],
        "description": texts["description"],
        "issuer": issuer.profile(),
        "validFrom": _timestamp(issued_at),
        "credentialSubject": {
            "id": subject_id,
            "type": ["AchievementSubject"],
            "identifier": [
                {
                    "type": "IdentityObject",
                    "identityType": "emailAddress",
                    "hashed": True,
                    "identityHash": identity_hash(email, salt),
                    "salt": salt,
                },
                {"type": "IdentityObject", "identityType": "name", "hashed": False, "identityHash": name},
            ],
            "achievement": {
                "id": achievement_id(issuer, course),
                "type": ["Achievement"],
                "achievementType": "Certificate",
                "name": course,
                "description": texts["achievement_description"],
                "criteria": {"narrative": texts["criteria"]},
                "creator": issuer.profile(),
            },
        },
        "credentialStatus": {
            "id": f"{status_list_url}#{status_index}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": STATUS_PURPOSE,
            "statusListIndex": str(status_index),
            "statusListCredential": status_list_url,
        },
    }


def build_status_list(
    *, issuer: Issuer, list_url: str, revoked: Iterable[int], published_at: datetime, size: int = STATUS_LIST_SIZE
) -> dict:
    """A ``BitstringStatusListCredential`` whose set bits are the ``revoked`` indexes."""
    return {
        "@context": list(STATUS_LIST_CONTEXTS),
        "id": list_url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": issuer.profile(),
        "validFrom": _timestamp(published_at),
        "credentialSubject": {
            "id": f"{list_url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": STATUS_PURPOSE,
            "encodedList": encode_bits(revoked, size),
        },
    }


def encode_bits(indexes: Iterable[int], size: int = STATUS_LIST_SIZE) -> str:
    """The spec's encoding: bit 0 is the left-most bit of the first byte; GZIP; base64url without
    padding, with the multibase prefix ``u``."""
    bits = bytearray(size // 8)
    for index in indexes:
        if not 0 <= index < size:
            raise CredentialError(f"status list index {index} is outside 0..{size - 1}")
        bits[index // 8] |= 0x80 >> (index % 8)
    compressed = gzip.compress(bytes(bits), compresslevel=9, mtime=0)
    return "u" + base64.urlsafe_b64encode(compressed).rstrip(b"=").decode()


def decode_bits(encoded: str) -> bytes:
    """The bitstring of an ``encodedList`` (with or without the multibase prefix)."""
    if not isinstance(encoded, str) or not encoded:
        raise CredentialError("the status list has no encodedList")
    text = encoded[1:] if encoded[0] == "u" else encoded
    try:
        compressed = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        bits = gzip.decompress(compressed)
    except (binascii.Error, OSError, EOFError, ValueError) as error:
        raise CredentialError(f"the status list's encodedList cannot be decoded ({error})") from None
    if not bits:
        raise CredentialError("the status list's encodedList cannot be decoded (it is empty)")
    return bits


def bit(bits: bytes, index: int) -> bool:
    if not 0 <= index < len(bits) * 8:
        raise CredentialError(f"status list index {index} is outside the list (0..{len(bits) * 8 - 1})")
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


# -- signing ----------------------------------------------------------------------------------


def _numeric_date(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def claims(credential: dict) -> dict:
    """The credential as a JWT payload: its members plus ``iss``, ``jti``, ``nbf``, ``sub`` (and
    ``exp`` for a ``validUntil``), as OB 3.0's JSON Web Token Proof Format maps them."""
    payload = dict(credential)
    payload["iss"] = credential["issuer"]["id"]
    payload["jti"] = credential["id"]
    payload["nbf"] = _numeric_date(credential["validFrom"])
    payload["sub"] = credential["credentialSubject"]["id"]
    if "validUntil" in credential:
        payload["exp"] = _numeric_date(credential["validUntil"])
    return payload


def sign(credential: dict, key: SigningKey) -> str:
    """The credential as a compact JWS (the only JOSE headers OB 3.0 allows: alg, kid, typ)."""
    header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    payload = json.dumps(claims(credential), ensure_ascii=False, separators=(",", ":")).encode()
    return jws.serialize_compact(header, payload, key.key, algorithms=[key.alg])


# -- verifying --------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What a verification found. ``state``: valid, revoked or invalid; ``reasons`` say why."""

    state: str
    reasons: list[str] = field(default_factory=list)
    credential: dict | None = None
    revocation: dict | None = None  # the status entry that is set, for a revoked credential

    @property
    def ok(self) -> bool:
        return self.state == "valid"


def _segments(token: str) -> tuple[dict, dict]:
    if not isinstance(token, str):
        raise CredentialError("a credential is a compact JWS (text), not " + type(token).__name__)
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise CredentialError("not a compact JWS: it must have three parts separated by dots")
    try:
        header, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CredentialError("not a compact JWS: its header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise CredentialError("not a compact JWS: its header and payload must be JSON objects")
    return header, payload


def unverified(token: str) -> tuple[dict, dict]:
    """Header and payload of a compact JWS, NOT checked: for display and for finding keys."""
    return _segments(token)


def _key_for(header: dict, jwks: dict) -> RSAKey | ECKey:
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise CredentialError("the JWS header names no key (kid)")
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise CredentialError("the issuer's key set is not a JWKS (no keys list)")
    fragment = kid.rpartition("#")[2]
    for candidate in keys:
        if isinstance(candidate, dict) and candidate.get("kid") in (kid, fragment):
            if "d" in candidate:
                raise CredentialError("the key set publishes a private key; refusing it")
            try:
                return import_key(candidate)
            except (JoseError, ValueError, TypeError) as error:
                raise CredentialError(f"the issuer's key {kid} cannot be read ({error})") from None
    raise CredentialError(f"the signing key {kid} is not among the issuer's published keys")


def check_signature(token: str, jwks: dict) -> dict:
    """The payload of ``token`` if its signature verifies with a key of ``jwks``; else CredentialError."""
    header, _ = _segments(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise CredentialError("the JWS is unsigned (alg none); a credential must be signed")
    if alg not in ACCEPTED_ALGORITHMS:
        raise CredentialError(f"the JWS algorithm {alg} is not accepted (use one of {', '.join(ACCEPTED_ALGORITHMS)})")
    key = _key_for(header, jwks)
    if alg[:2] not in {"RSA": ("RS", "PS"), "EC": ("ES",)}.get(key.key_type, ()):
        raise CredentialError(f"the JWS algorithm {alg} does not fit the issuer's {key.key_type} key")
    try:
        signature = jws.deserialize_compact(token.strip(), key, algorithms=[alg])
    except JoseError as error:
        raise CredentialError(f"the signature does not verify with the issuer's key ({error.error})") from None
    try:
        return json.loads(signature.payload)
    except ValueError:
        raise CredentialError("the signed payload is not JSON") from None


def _check_claims(payload: dict, now: datetime, kinds: tuple[str, ...]) -> dict:
    types = payload.get("type")
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or "VerifiableCredential" not in types or not set(kinds) & set(types):
        raise CredentialError(f"not a {kinds[0]}: its type is {types!r}")
    issuer = payload.get("issuer")
    issuer_id = issuer.get("id") if isinstance(issuer, dict) else issuer
    subject = payload.get("credentialSubject")
    subject_id = subject.get("id") if isinstance(subject, dict) else None
    for claim, expected in (("iss", issuer_id), ("jti", payload.get("id")), ("sub", subject_id)):
        if claim == "sub" and expected is None and claim not in payload:
            continue  # a subject identified by identifier only has no id and no sub
        if payload.get(claim) is None or payload.get(claim) != expected:
            raise CredentialError(f"the {claim} claim does not match the credential ({payload.get(claim)!r})")
    try:
        valid_from = _numeric_date(payload["validFrom"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CredentialError("the credential has no valid validFrom date") from None
    if payload.get("nbf") != valid_from:
        raise CredentialError("the nbf claim does not match the credential's validFrom")
    moment = now.timestamp()
    if valid_from > moment + CLOCK_SKEW_SECONDS:
        raise CredentialError(f"the credential is not valid before {payload['validFrom']}")
    expires = payload.get("exp")
    if "validUntil" in payload or expires is not None:
        try:
            until = _numeric_date(payload["validUntil"]) if "validUntil" in payload else int(expires)
        except (TypeError, ValueError, AttributeError):
            raise CredentialError("the credential's validUntil/exp is not a date") from None
        if expires is not None and expires != until:
            raise CredentialError("the exp claim does not match the credential's validUntil")
        if until < moment - CLOCK_SKEW_SECONDS:
            when = datetime.fromtimestamp(until, UTC).isoformat().replace("+00:00", "Z")
            raise CredentialError(f"the credential expired at {when}")
    return payload


def verify(
    token: str,
    jwks: dict,
    status_list: Callable[[str], str] | None = None,
    now: datetime | None = None,
) -> Verdict:
    """Check a credential: its signature against ``jwks``, its claims and dates, and (with
    ``status_list``: a URL → the list's compact JWS) whether its bit in the status list is set.
    Never raises for a bad credential: the verdict says what is wrong."""
    now = now or datetime.now(UTC)
    try:
        credential = _check_claims(check_signature(token, jwks), now, CREDENTIAL_TYPES)
    except CredentialError as error:
        return Verdict("invalid", [str(error)])
    verdict = Verdict("valid", ["the signature verifies with the issuer's published key", "claims and dates hold"])
    verdict.credential = credential
    entry = credential.get("credentialStatus")
    if entry is None:
        verdict.reasons.append("the credential has no status entry: it cannot be revoked")
        return verdict
    if status_list is None:
        verdict.reasons.append("revocation not checked (no status list given)")
        return verdict
    try:
        revoked = _revoked(entry, credential, jwks, status_list, now)
    except CredentialError as error:
        return Verdict("invalid", [f"revocation cannot be checked: {error}"], credential)
    if revoked:
        return Verdict("revoked", ["the issuer has revoked it (its bit in the status list is set)"], credential, entry)
    verdict.reasons.append("not revoked (its bit in the issuer's signed status list is clear)")
    return verdict


def _revoked(entry: Any, credential: dict, jwks: dict, status_list: Callable[[str], str], now: datetime) -> bool:
    entries = entry if isinstance(entry, list) else [entry]
    revocations = [e for e in entries if isinstance(e, dict) and e.get("statusPurpose") == STATUS_PURPOSE]
    if not revocations:
        return False
    revoked = False
    for item in revocations:
        if item.get("type") != "BitstringStatusListEntry":
            raise CredentialError(f"unknown status entry type {item.get('type')!r}")
        url = item.get("statusListCredential")
        try:
            index = int(item.get("statusListIndex"))
        except (TypeError, ValueError):
            raise CredentialError("the status entry's statusListIndex is not a number") from None
        if not isinstance(url, str) or not url:
            raise CredentialError("the status entry names no statusListCredential")
        listing = _check_claims(check_signature(status_list(url), jwks), now, ("BitstringStatusListCredential",))
        if listing.get("id") != url:
            raise CredentialError(f"the status list fetched is {listing.get('id')!r}, not {url!r}")
        if listing["iss"] != credential["iss"]:
            raise CredentialError("the status list was not issued by the credential's issuer")
        subject = listing.get("credentialSubject") or {}
        if subject.get("statusPurpose") != STATUS_PURPOSE:
            raise CredentialError("the status list is not a revocation list")
        revoked = revoked or bit(decode_bits(subject.get("encodedList")), index)
    return revoked
