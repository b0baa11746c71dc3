from migrations.common import run
from services.models import StudentsBase

run(StudentsBase.metadata, "students:StudentsBase")
