"""SQLite commits are synced to disk by default (``SQLITE_SYNCHRONOUS=full``); ``normal`` is an opt-in."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.infra.db import build_engine
from services.infra.settings import ConfigError, Settings

FULL, NORMAL = 2, 1  # PRAGMA synchronous answers with SQLite's numbers


def pragmas(engine) -> tuple[str, int]:
    with engine.connect() as connection:
        mode = connection.execute(text("PRAGMA journal_mode")).scalar()
        return mode, connection.execute(text("PRAGMA synchronous")).scalar()


def test_the_default_is_wal_with_every_commit_synced(tmp_path):
    assert Settings().sqlite_synchronous == "full"
    assert pragmas(build_engine(f"sqlite:///{tmp_path}/a.db")) == ("wal", FULL)


def test_normal_is_chosen_explicitly(tmp_path):
    settings = Settings.from_config({"SQLITE_SYNCHRONOUS": "normal"})
    engine = build_engine(f"sqlite:///{tmp_path}/b.db", sqlite_synchronous=settings.sqlite_synchronous)
    assert pragmas(engine) == ("wal", NORMAL)


def test_anything_else_is_refused_with_the_setting_named(tmp_path):
    with pytest.raises(ConfigError, match="SQLITE_SYNCHRONOUS"):
        Settings.from_config({"SQLITE_SYNCHRONOUS": "off"})  # durability is not traded for speed
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        build_engine(f"sqlite:///{tmp_path}/c.db", sqlite_synchronous="off")
