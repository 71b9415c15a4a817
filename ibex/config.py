"""Configuration: one frozen dataclass per application, from a TOML file plus ``IBEX_…`` variables.

Precedence: environment variable ``IBEX_<SETTING>`` over the file over the dataclass default.
Secrets have no default. Relative paths in a file are relative to that file. Every problem is a
:class:`~ibex.errors.ConfigError` that names the setting and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ibex.errors import ConfigError
from ibex.keys import MEMBER_ID_RE

ENV_PREFIX = "IBEX_"
CONFIG_MAX_BYTES = 1 << 20
POLICY_ENGINES = ("regorus", "opa")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Settings of the central broker."""

    data_dir: Path
    keys_dir: Path
    policies_dir: Path
    broker_id: str = "IBEX-BROKER"
    federation: str = "ibex"
    public_url: str | None = None
    db_key_file: Path | None = None
    db_key_env: str | None = None
    host: str = "127.0.0.1"
    port: int = 8400
    policy_engine: str = "regorus"
    opa_url: str | None = None
    # An OPA sidecar started with --bundle owns the policy paths: check its bundle's revision
    # instead of uploading the policy (deploy/compose.yaml, deploy/k8s).
    opa_bundle_preloaded: bool = False
    max_body_bytes: int = 1 << 20
    clock_skew_seconds: int = 60
    max_query_ttl_seconds: int = 300
    target_timeout_seconds: float = 5.0
    overall_deadline_seconds: float = 10.0
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    audit_retention_days: int = 730
    max_fanout_workers: int = 32
    oversight_token_file: Path | None = None
    admin_token_file: Path | None = None

    @property
    def url(self) -> str:
        """The URL members reach the broker at (advertised in the federation document)."""
        return self.public_url or f"http://{self.host}:{self.port}"

    def __post_init__(self) -> None:
        _check_member("broker_id", self.broker_id)
        _check_db_key(self.db_key_file, self.db_key_env)
        _check_port("port", self.port)
        _check_engine(self.policy_engine, self.opa_url)
        _positive(self, "max_body_bytes", "clock_skew_seconds", "max_query_ttl_seconds")
        _positive(self, "target_timeout_seconds", "overall_deadline_seconds")
        _positive(self, "checkpoint_every", "checkpoint_seconds")
        _positive(self, "audit_retention_days", "max_fanout_workers")


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """Settings of one agency's connector (provider and gateway roles)."""

    member_id: str
    data_dir: Path
    keys_dir: Path
    broker_url: str
    broker_public_key_file: Path | None = None
    db_key_file: Path | None = None
    db_key_env: str | None = None
    gateway_token_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8500
    local_policy_dir: Path | None = None
    policy_engine: str = "regorus"
    opa_url: str | None = None
    opa_bundle_preloaded: bool = False
    max_body_bytes: int = 1 << 20
    clock_skew_seconds: int = 60
    hit_reference_ttl_seconds: int = 3600
    match_threshold: float = 0.85
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    audit_retention_days: int = 730
    federation_max_age_seconds: float = 5.0
    federation_max_stale_seconds: float = 60.0
    public_url: str | None = None

    @property
    def url(self) -> str:
        """The URL the broker reaches this connector at."""
        return self.public_url or f"http://{self.host}:{self.port}"

    def __post_init__(self) -> None:
        _check_member("member_id", self.member_id)
        _check_db_key(self.db_key_file, self.db_key_env)
        _check_port("port", self.port)
        _check_engine(self.policy_engine, self.opa_url)
        if not self.broker_url.startswith(("http://", "https://")):
            raise ConfigError("broker_url must be an http:// or https:// URL")
        if not 0.0 < self.match_threshold <= 1.0:
            raise ConfigError("match_threshold must be in (0, 1]")
        _positive(self, "max_body_bytes", "clock_skew_seconds", "hit_reference_ttl_seconds")
        _positive(self, "checkpoint_every", "checkpoint_seconds", "audit_retention_days")
        _positive(self, "federation_max_age_seconds")
        _positive(self, "federation_max_stale_seconds")


# --- validation helpers ----------------------------------------------------------------------


def _check_member(name: str, value: str) -> None:
    if not MEMBER_ID_RE.fullmatch(value):
        raise ConfigError(f"{name} {value!r} is not a member id such as CA-CBSA")


def _check_db_key(key_file: Path | None, key_env: str | None) -> None:
    if key_file is None and not key_env:
        raise ConfigError(
            "db_key_file or db_key_env must be set: the encrypted stores have no default key"
        )


def _check_port(name: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535, not {port}")


def _check_engine(engine: str, opa_url: str | None) -> None:
    if engine not in POLICY_ENGINES:
        raise ConfigError(
            f"policy_engine must be one of {', '.join(POLICY_ENGINES)}, not {engine!r}"
        )
    if engine == "opa" and not opa_url:
        raise ConfigError("policy_engine 'opa' needs opa_url")


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{name} must be positive")


# --- loading ---------------------------------------------------------------------------------


def load_config(
    cls: type[T],
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from the TOML file at ``path``, the environment and explicit overrides."""
    environ = os.environ if env is None else env
    raw: dict[str, tuple[Any, str]] = {}
    base = Path.cwd()
    if path is not None:
        base = path.resolve().parent
        for key, value in _read_toml(path).items():
            raw[key] = (value, f"{path}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r} in {path}")
    for name in fields:
        var = ENV_PREFIX + name.upper()
        if var in environ:
            raw[name] = (environ[var], f"environment variable {var}")
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r}")
        raw[key] = (value, "override")
    values: dict[str, Any] = {}
    for name, (value, origin) in raw.items():
        values[name] = _coerce(name, value, hints[name], origin, base)
    missing = [
        n
        for n, f in fields.items()
        if n not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)}")
    return cls(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    if len(data) > CONFIG_MAX_BYTES:
        raise ConfigError(f"configuration file {path} is larger than {CONFIG_MAX_BYTES} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _coerce(name: str, value: Any, hint: Any, origin: str, base: Path) -> Any:
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    target = next(a for a in args if a is not type(None)) if optional else hint
    where = f"setting {name} (from {origin})"
    if optional and (value is None or value == ""):
        return None
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{where} must be true or false")
    if target is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer") from None
    if target is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number") from None
    if target is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p)
    if target is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value
    raise ConfigError(f"{where} has an unsupported type")
