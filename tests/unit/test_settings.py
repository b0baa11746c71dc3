"""Settings: declared once, typed, and ``config.yaml``'s defaults equal to them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from services.infra.config import load_config
from services.infra.settings import ConfigError, Settings

NAMEKO_KEYS = {"AMQP_URI", "HEARTBEAT", "max_workers", "SERVICE_CONTAINER_CLS", "DB_URIS", "LOGGING"}


@pytest.fixture
def bare_environment(monkeypatch):
    for key in list(os.environ):
        if key.isupper() and key not in ("PATH", "HOME"):
            monkeypatch.delenv(key)


def test_config_yaml_defaults_are_the_declared_defaults(bare_environment):
    config = load_config()
    assert Settings.from_config(config) == Settings()
    assert set(config) - NAMEKO_KEYS == set(Settings.config_keys())


def test_environment_values_are_typed(monkeypatch):
    monkeypatch.setenv("RPC_TIMEOUT", "0.5")
    monkeypatch.setenv("BULK_MAX_ROWS", "10")
    monkeypatch.setenv("SMTP_STARTTLS", "true")
    monkeypatch.setenv("SMTP_HOST", "mail.example.org")
    settings = Settings.from_config(load_config())
    assert (settings.rpc_timeout, settings.bulk_max_rows) == (0.5, 10)
    assert settings.smtp_starttls is True
    assert settings.smtp_host == "mail.example.org"


def test_missing_and_empty_values_take_the_default():
    settings = Settings.from_config({"RPC_TIMEOUT": None, "MAIL_FROM": " ", "SMTP_HOST": ""})
    assert settings.rpc_timeout == 5.0
    assert settings.mail_from == Settings().mail_from
    assert settings.smtp_host is None


def test_passwords_are_kept_as_written():
    assert Settings.from_config({"SMTP_PASSWORD": " s3cret "}).smtp_password == " s3cret "


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RPC_TIMEOUT", "soon", "RPC_TIMEOUT must be a number, got 'soon'"),
        ("BULK_MAX_ROWS", 2.5, "BULK_MAX_ROWS must be a whole number, got 2.5"),
        ("BULK_MAX_ROWS", True, "BULK_MAX_ROWS must be a whole number, got True"),
        ("SMTP_STARTTLS", "maybe", "SMTP_STARTTLS must be true or false, got 'maybe'"),
        ("MAIL_MAX_ATTEMPTS", 0, "MAIL_MAX_ATTEMPTS must be at least 1, got 0"),
        ("RPC_TIMEOUT", -1, "RPC_TIMEOUT must be at least 0.001, got -1"),
        ("NICE_CERTIFICATES", 20, "NICE_CERTIFICATES must be at most 19, got 20"),
        ("NICE_STATUS", -5, "NICE_STATUS must be at least 0, got -5"),
    ],
)
def test_bad_values_name_their_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        Settings.from_config({key: value})


def test_every_setting_is_documented_in_the_readme():
    """Each key's environment variable (as config.yaml names it) has a row in the README's table."""
    root = Path(__file__).resolve().parents[2]
    variables = dict(re.findall(r"^(\w+): \$\{(\w+)[:}]", (root / "config.yaml").read_text(), re.M))
    readme = (root / "README.md").read_text()
    missing = [variables[key] for key in Settings.config_keys() if f"`{variables[key]}`" not in readme]
    assert missing == []
