from migrations.common import run
from services._notifications.models import NotificationsBase

run(NotificationsBase.metadata, "notifications:NotificationsBase")
