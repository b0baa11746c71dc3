"""The gateway's routes, one module per resource. ``GatewayService``
(:mod:`gateway.service`) combines them and declares the dependencies they use."""

from gateway.routes.access import AccessRoutes
from gateway.routes.bulk_jobs import BulkJobRoutes
from gateway.routes.certificates import CertificateRoutes
from gateway.routes.docs import DocsRoutes
from gateway.routes.status_changes import StatusChangeRoutes
from gateway.routes.students import StudentRoutes

__all__ = [
    "AccessRoutes",
    "BulkJobRoutes",
    "CertificateRoutes",
    "DocsRoutes",
    "StatusChangeRoutes",
    "StudentRoutes",
]
