from migrations.common import run
from services._status.models import StatusBase

run(StatusBase.metadata, "status:StatusBase")
