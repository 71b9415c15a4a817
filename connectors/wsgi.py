"""gunicorn entry point: ``connectors.wsgi:create()`` reads IBEX_CONNECTOR_CONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from connectors.app import create_app
from ibex.config import ConnectorConfig, load_config
from ibex.errors import ConfigError


def create() -> Flask:
    path = os.environ.get("IBEX_CONNECTOR_CONFIG")
    if not path:
        raise ConfigError("IBEX_CONNECTOR_CONFIG must name the connector's configuration file")
    return create_app(load_config(ConnectorConfig, Path(path)))
