"""gunicorn entry point: ``broker.wsgi:create()`` reads the config named by IBEX_BROKER_CONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from broker.app import create_app
from ibex.config import BrokerConfig, load_config
from ibex.errors import ConfigError


def create() -> Flask:
    path = os.environ.get("IBEX_BROKER_CONFIG")
    if not path:
        raise ConfigError("IBEX_BROKER_CONFIG must name the broker's configuration file")
    return create_app(load_config(BrokerConfig, Path(path)))
