from migrations.common import run
from services.models import StatusBase

run(StatusBase.metadata, "status:StatusBase")
