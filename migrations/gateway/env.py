from gateway.access.models import GatewayBase
from migrations.common import run

run(GatewayBase.metadata, "gateway:GatewayBase")
