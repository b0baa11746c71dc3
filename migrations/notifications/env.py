from migrations.common import run
from services.models import NotificationsBase

run(NotificationsBase.metadata, "notifications:NotificationsBase")
