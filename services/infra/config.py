"""The one config loader: ``config.yaml`` with nameko's ``${VAR:default}``
substitution, exactly as ``nameko run --config`` reads it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import yaml

with warnings.catch_warnings():  # nameko 2.x runs on eventlet, which announces its deprecation
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from nameko.cli.main import setup_yaml_parser

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "config.yaml"


def load_config(path: str | os.PathLike | None = None) -> dict:
    setup_yaml_parser()
    with open(path or os.environ.get("MENSAGERIA_CONFIG", DEFAULT_PATH)) as handle:
        return yaml.safe_load(handle)
