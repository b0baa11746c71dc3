"""Bring every service's database to the latest migration.

python -m tools.migrate [--config config.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config

from services.infra.config import load_config

ROOT = Path(__file__).resolve().parent.parent
HISTORIES = {
    "students": "students:StudentsBase",
    "status": "status:StatusBase",
    "certificates": "certificates:CertificatesBase",
    "notifications": "notifications:NotificationsBase",
    "gateway": "gateway:GatewayBase",
}


def upgrade(config: dict, services: tuple[str, ...] = tuple(HISTORIES)) -> None:
    for service in services:
        alembic_config = Config(str(ROOT / "alembic.ini"), ini_section=service)
        alembic_config.set_main_option("script_location", str(ROOT / "migrations" / service))
        alembic_config.set_main_option("sqlalchemy.url", config["DB_URIS"][HISTORIES[service]].replace("%", "%%"))
        command.upgrade(alembic_config, "head")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="config file (default: config.yaml)")
    upgrade(load_config(parser.parse_args().config))


if __name__ == "__main__":
    main()
