"""The certificates service's signing key and what it signs: credentials and status lists.

``CredentialSigner`` loads ``CERTIFICATE_SIGNING_KEY`` when the container starts (a missing or
unusable key stops the service with one line naming the setting) and hands workers a
:class:`Signer`::

    class CertificatesService:
        signer = CredentialSigner()

        def _sign(self, certificate):
            certificate.credential = self.signer.sign_certificate(certificate)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from nameko.extensions import DependencyProvider

from services import credentials, i18n
from services._certificates.models import Certificate
from services.infra.models import utcnow
from services.infra.settings import ConfigError, Settings


class Signer:
    """Builds and signs the credentials of one issuer with one key; knows their public URLs."""

    def __init__(self, key: credentials.SigningKey, settings: Settings):
        self.base_url = settings.public_base_url.rstrip("/")
        self.key = key
        self.default_language = settings.default_language
        self.issuer = credentials.Issuer.configured(settings)

    def certificate_url(self, code: str, suffix: str = "") -> str:
        return f"{self.base_url}/certificates/{code}{suffix}"

    def status_list_url(self, list_id: int) -> str:
        return f"{self.base_url}/credentials/status/{list_id}"

    @property
    def jwks_url(self) -> str:
        return jwks_url(self.base_url)

    def language(self, certificate: Certificate) -> str:
        return i18n.normalize(certificate.language) or self.default_language

    def sign_certificate(self, certificate: Certificate) -> str:
        """The certificate's OpenBadgeCredential, signed; its status bit must be allocated."""
        language = self.language(certificate)
        _ = i18n.translations(language).gettext
        course, issuer = certificate.course, self.issuer.name
        credential = credentials.build_credential(
            issuer=self.issuer,
            credential_id=self.certificate_url(certificate.code, "/credential"),
            subject_id=f"urn:uuid:{uuid.uuid4()}",
            name=certificate.student_name,
            email=certificate.student_email,
            course=course,
            issued_at=certificate.issued_at,
            status_list_url=self.status_list_url(certificate.status_list),
            status_index=certificate.status_index,
            texts={
                "name": _("Certificate of completion: %(course)s") % {"course": course},
                "description": _("%(name)s completed the course %(course)s at %(issuer)s.")
                % {"name": certificate.student_name, "course": course, "issuer": issuer},
                "achievement_description": _("Completion of the course %(course)s.") % {"course": course},
                "criteria": _("Complete every requirement of the course %(course)s at %(issuer)s.")
                % {"course": course, "issuer": issuer},
            },
        )
        return credentials.sign(credential, self.key)

    def sign_status_list(self, list_id: int, revoked: Iterable[int]) -> str:
        status_list = credentials.build_status_list(
            issuer=self.issuer, list_url=self.status_list_url(list_id), revoked=revoked, published_at=utcnow()
        )
        return credentials.sign(status_list, self.key)


class CredentialSigner(DependencyProvider):
    """The :class:`Signer` of ``CERTIFICATE_SIGNING_KEY`` (a PEM private key file)."""

    def bind(self, container: Any, attr_name: str) -> CredentialSigner:
        # loaded while the container is built (before any greenthread runs), so that a service
        # started without a usable key stops with one line naming the setting
        bound = super().bind(container, attr_name)
        bound.signer = _load(container.config)
        return bound

    def get_dependency(self, worker_ctx: Any) -> Signer:
        return self.signer


def _load(config: dict) -> Signer:
    settings = Settings.from_config(config)
    path = settings.require("certificate_signing_key")
    try:
        key = credentials.load_signing_key(path, jwks_url(settings.public_base_url.rstrip("/")))
    except credentials.CredentialError as error:
        raise ConfigError(f"config: CERTIFICATE_SIGNING_KEY: {error}") from None
    return Signer(key, settings)


def jwks_url(base_url: str) -> str:
    """Where the issuer's public keys are published (the ``kid`` of each key points here)."""
    return f"{base_url}/.well-known/jwks.json"
