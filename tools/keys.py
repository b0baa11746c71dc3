"""Manage API keys, against the configured database, whether the system runs or not.

    python -m tools.keys create --name "secretaria web app" --scopes students:read,status:write [--expires-in 90]
    python -m tools.keys list
    python -m tools.keys revoke KEY_ID
    python -m tools.keys first-run --key-file data/admin.key

``create`` prints the new key alone on its last line, once: it is never shown
again (only a keyed hash of it is stored). ``revoke`` takes effect on every gateway
within ``API_KEY_REFRESH_SECONDS``. ``first-run`` (what ``make run`` calls) creates
one ``admin`` key into ``--key-file`` (mode 0600) when the database holds no key yet.
Scopes: see ``gateway.access.keys.SCOPES`` (``admin`` is all of them).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.access import keys, store
from gateway.access.models import GatewayBase
from services.infra.config import load_config
from services.infra.db import build_engine, db_uri
from services.infra.settings import ConfigError, Settings
from tools.migrate import upgrade

LIST_COLUMNS = ("id", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked")


class KeyStore:
    """The configured gateway database (migrated first) and the key-hashing secret."""

    def __init__(self, config: dict):
        self.secret_key = Settings.from_config(config).require("api_key_secret")
        upgrade(config, ("gateway",))
        self.engine = build_engine(db_uri(config, "gateway", GatewayBase))
        self.Session = sessionmaker(bind=self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()


def operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def create(keystore: KeyStore, args: argparse.Namespace) -> None:
    record, key = store.create_key(
        keystore.Session,
        keystore.secret_key,
        name=args.name,
        scopes=args.scopes.split(","),
        expires_in_days=args.expires_in,
        rate_per_second=args.rate,
        burst=args.burst,
        created_by=operator(),
    )
    expires = record["expires_at"].isoformat() if record["expires_at"] else "never"
    print(f"created key {record['id']} ({record['name']}): scopes {','.join(record['scopes'])}; expires {expires}")
    print("the key is shown this once; store it now:")
    print(key)


def list_(keystore: KeyStore, args: argparse.Namespace) -> None:
    rows = [[_cell(record[column]) for column in LIST_COLUMNS] for record in store.list_keys(keystore.Session)]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(LIST_COLUMNS)]
    for row in [list(LIST_COLUMNS), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def revoke(keystore: KeyStore, args: argparse.Namespace) -> None:
    record = store.revoke_key(keystore.Session, args.key_id)
    print(f"revoked key {record['id']} ({record['name']}) at {record['revoked_at'].isoformat()}")


def first_run(keystore: KeyStore, args: argparse.Namespace) -> None:
    """One admin key on a fresh database; a reminder of where it is on later starts."""
    path = Path(args.key_file)
    if store.count_keys(keystore.Session) == 0:
        _, key = store.create_key(
            keystore.Session, keystore.secret_key, name="admin", scopes=[keys.ADMIN], created_by="first run"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        os.chmod(path, 0o600)
    if path.exists():
        print(f"mensageria: the admin API key is in {path} (export MENSAGERIA_KEY=$(cat {path}))")


def _cell(value: object) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)


def _positive(kind: type):
    def convert(text: str):
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    convert.__name__ = kind.__name__
    return convert


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="config file (default: config.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("create", help="create a key; prints it once, on the last line")
    new.add_argument("--name", required=True, help="who uses it (the actor of its changes)")
    new.add_argument("--scopes", required=True, help=f"comma-separated, of: {','.join(keys.SCOPES)}")
    new.add_argument("--expires-in", type=_positive(float), metavar="DAYS", help="expires after DAYS days")
    new.add_argument("--rate", type=_positive(float), help="requests per second (default: RATE_LIMIT_PER_SECOND)")
    new.add_argument("--burst", type=_positive(int), help="requests at once (default: RATE_LIMIT_BURST)")
    new.set_defaults(run=create)
    commands.add_parser("list", help="every key (never a secret)").set_defaults(run=list_)
    gone = commands.add_parser("revoke", help="revoke a key")
    gone.add_argument("key_id")
    gone.set_defaults(run=revoke)
    first = commands.add_parser("first-run", help="an admin key into KEY_FILE if there is no key yet")
    first.add_argument("--key-file", required=True)
    first.set_defaults(run=first_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        keystore = KeyStore(load_config(args.config))
    except (ConfigError, OSError) as exc:
        print(f"tools.keys: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        print(f"tools.keys: the gateway database is not reachable: {reason}"[:300], file=sys.stderr)
        return 2
    try:
        args.run(keystore, args)
    except store.KeyNotFound:
        print(f"tools.keys: no key with id {args.key_id}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"tools.keys: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"tools.keys: the gateway database failed: {exc.__class__.__name__}"[:300], file=sys.stderr)
        return 2
    finally:
        keystore.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
