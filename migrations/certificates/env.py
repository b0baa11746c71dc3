from migrations.common import run
from services._certificates.models import CertificatesBase

run(CertificatesBase.metadata, "certificates:CertificatesBase")
