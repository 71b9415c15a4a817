"""Configuration: TOML plus IBEX_ variables, validated at start-up, naming the bad setting."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibex.config import BrokerConfig, ConnectorConfig, load_config
from ibex.errors import ConfigError

BROKER_TOML = """
data_dir = "var"
keys_dir = "keys"
policies_dir = "/srv/policies"
db_key_file = "keys/broker.db.key"
port = 8400
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    return path


def test_file_then_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, BROKER_TOML)
    cfg = load_config(
        BrokerConfig, path, env={"IBEX_PORT": "9000", "IBEX_POLICY_ENGINE": "regorus"}
    )
    assert cfg.port == 9000
    assert cfg.data_dir == tmp_path / "var"  # relative to the file
    assert cfg.policies_dir == Path("/srv/policies")
    assert cfg.db_key_file == tmp_path / "keys/broker.db.key"
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("extra_env", "text", "match"),
    [
        ({"IBEX_PORT": "eighty"}, BROKER_TOML, "setting port .*environment variable IBEX_PORT"),
        ({"IBEX_PORT": "0"}, BROKER_TOML, "port must be between"),
        ({}, BROKER_TOML + 'colour = "blue"\n', "unknown setting 'colour'"),
        ({}, BROKER_TOML.replace('db_key_file = "keys/broker.db.key"', ""), "no default key"),
        ({"IBEX_POLICY_ENGINE": "opa"}, BROKER_TOML, "needs opa_url"),
        ({"IBEX_POLICY_ENGINE": "cedar"}, BROKER_TOML, "policy_engine must be one of"),
        ({}, 'data_dir = "x"\n', "missing required setting"),
        ({}, "port = [", "not valid TOML"),
        ({}, BROKER_TOML.replace("port = 8400", 'port = "x"'), "setting port"),
        ({"IBEX_CLOCK_SKEW_SECONDS": "-1"}, BROKER_TOML, "clock_skew_seconds must be positive"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, extra_env: dict[str, str], text: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(BrokerConfig, _write(tmp_path, text), env=extra_env)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(BrokerConfig, tmp_path / "absent.toml")


def test_connector_config(tmp_path: Path) -> None:
    cfg = load_config(
        ConnectorConfig,
        None,
        env={
            "IBEX_MEMBER_ID": "CA-CBSA",
            "IBEX_DATA_DIR": str(tmp_path),
            "IBEX_KEYS_DIR": str(tmp_path),
            "IBEX_BROKER_URL": "http://127.0.0.1:8400",
            "IBEX_DB_KEY_ENV": "CBSA_DB_KEY",
            "IBEX_MATCH_THRESHOLD": "0.9",
        },
    )
    assert cfg.member_id == "CA-CBSA"
    assert cfg.match_threshold == 0.9
    with pytest.raises(ConfigError, match="member_id"):
        load_config(ConnectorConfig, None, env={}, overrides={**_conn(tmp_path), "member_id": "x"})
    with pytest.raises(ConfigError, match="broker_url"):
        load_config(
            ConnectorConfig, None, env={}, overrides={**_conn(tmp_path), "broker_url": "ftp://x"}
        )


def _conn(tmp_path: Path) -> dict[str, object]:
    return {
        "member_id": "CA-CBSA",
        "data_dir": str(tmp_path),
        "keys_dir": str(tmp_path),
        "broker_url": "http://127.0.0.1:8400",
        "db_key_env": "X",
    }


@given(st.text(max_size=200))
def test_random_toml_raises_only_config_errors(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_text(text)
        with contextlib.suppress(ConfigError):
            load_config(BrokerConfig, path, env={})
