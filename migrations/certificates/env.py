from migrations.common import run
from services.models import CertificatesBase

run(CertificatesBase.metadata, "certificates:CertificatesBase")
