from migrations.common import run
from services._students.models import StudentsBase

run(StudentsBase.metadata, "students:StudentsBase")
