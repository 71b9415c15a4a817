"""A new partner's side of joining: keys, a connector configuration, a profile, a join request.

``init_partner`` writes everything a partner needs in one directory (keys ``0600``, a database
key, a gateway token, ``connector.toml`` and ``partner.toml``); ``build_join_request`` turns the
profile, the public keys and the conformance reports from ``ibex connector selftest`` into a join
request signed with the partner's own signing key (docs/PARTNER.md).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibex.envelope import Envelope, sign
from ibex.errors import BadInput, ConfigError
from ibex.jsonio import dumps
from ibex.keys import MemberKeys, b64, check_member_id, load_public
from ibex.messages import (
    AGENCY_KINDS,
    ENTITY_TYPES,
    PT_JOIN_REQUEST,
    JoinKeys,
    JoinRequest,
    PublicKeyInfo,
)
from ibex.protocol import new_id
from ibex.store import generate_db_key_file
from ibex.timeutil import format_ts, now

PROFILE = "partner.toml"
CONNECTOR = "connector.toml"
BROKER_KEY = "broker.public.json"


@dataclass(frozen=True, slots=True)
class PartnerProfile:
    """What the partner declares about itself in its join request."""

    member: str
    name: str
    country: str
    agency_kind: str
    jurisdictions: tuple[str, ...]
    endpoint: str
    schemas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    federation: str | None = None
    contact: str | None = None

    def check(self) -> None:
        check_member_id(self.member)
        if len(self.country) != 2 or not self.country.isupper():
            raise ConfigError("country must be an ISO 3166-1 alpha-2 code such as DE")
        if self.agency_kind not in AGENCY_KINDS:
            raise ConfigError(f"agency kind must be one of {', '.join(AGENCY_KINDS)}")
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError("endpoint must be an http:// or https:// URL")
        if not self.schemas:
            raise ConfigError("declare at least one schema served, e.g. person=1.0")
        unknown = sorted(set(self.schemas) - set(ENTITY_TYPES))
        if unknown:
            raise ConfigError(f"unknown entity type(s) in schemas: {', '.join(unknown)}")

    def to_toml(self) -> str:
        lines = [
            f"member = {_q(self.member)}",
            f"name = {_q(self.name)}",
            f"country = {_q(self.country)}",
            f"agency_kind = {_q(self.agency_kind)}",
            f"jurisdictions = [{', '.join(_q(j) for j in self.jurisdictions)}]",
            f"endpoint = {_q(self.endpoint)}",
        ]
        if self.federation:
            lines.append(f"federation = {_q(self.federation)}")
        if self.contact:
            lines.append(f"contact = {_q(self.contact)}")
        lines.append("")
        lines.append("[schemas]  # entity type -> shared schema versions this connector serves")
        lines.extend(
            f"{k} = [{', '.join(_q(v) for v in vs)}]" for k, vs in sorted(self.schemas.items())
        )
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: Path) -> PartnerProfile:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read partner profile {path}: {exc}") from None
        try:
            profile = cls(
                member=str(raw["member"]),
                name=str(raw["name"]),
                country=str(raw["country"]),
                agency_kind=str(raw["agency_kind"]),
                jurisdictions=tuple(str(j) for j in raw["jurisdictions"]),
                endpoint=str(raw["endpoint"]),
                schemas={str(k): tuple(str(x) for x in v) for k, v in raw["schemas"].items()},
                federation=raw.get("federation"),
                contact=raw.get("contact"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"partner profile {path} lacks or mistypes {exc}") from None
        profile.check()
        return profile


def _q(text: str) -> str:
    return dumps(str(text)).decode()


def parse_schemas(text: str) -> dict[str, tuple[str, ...]]:
    """``person=1.0,vessel=1.0`` (a type may repeat for several versions)."""
    out: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        entity, _, version = item.partition("=")
        out[entity.strip()] = (*out.get(entity.strip(), ()), version.strip() or "1.0")
    return out


def _secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
    finally:
        os.close(fd)


def init_partner(
    directory: Path,
    profile: PartnerProfile,
    *,
    broker_url: str,
    broker_public_key: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8500,
) -> list[Path]:
    """Write keys, a database key, a gateway token, ``connector.toml`` and ``partner.toml``."""
    profile.check()
    root = directory.resolve()
    if (root / CONNECTOR).exists():
        raise ConfigError(f"{root / CONNECTOR} exists: this directory is already set up")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    keys_dir = root / "keys"
    written = MemberKeys.generate(profile.member).save(keys_dir)
    db_key = keys_dir / "db.key"
    generate_db_key_file(db_key)
    token = keys_dir / "gateway.token"
    _secret(token, secrets.token_urlsafe(32))
    broker_key = keys_dir / BROKER_KEY
    if broker_public_key is not None:
        public = load_public(broker_public_key)  # refuses anything but a public key file
        broker_key.write_bytes(dumps(public.to_json()) + b"\n")
    settings: dict[str, str | int] = {
        "member_id": profile.member,
        "data_dir": str(root / "data"),
        "keys_dir": str(keys_dir),
        "db_key_file": str(db_key),
        "gateway_token_file": str(token),
        "broker_url": broker_url,
        "broker_public_key_file": str(broker_key),
        "host": host,
        "port": port,
    }
    connector = root / CONNECTOR
    connector.write_text(
        "".join(
            f"{k} = {v}\n" if isinstance(v, int) else f"{k} = {_q(str(v))}\n"
            for k, v in settings.items()
        )
    )
    (root / PROFILE).write_text(profile.to_toml())
    return [*written, db_key, token, connector, root / PROFILE]


def build_join_request(
    profile: PartnerProfile,
    keys: MemberKeys,
    conformance: Sequence[Envelope] = (),
    *,
    at: float | None = None,
) -> Envelope:
    """The join request, signed with the partner's signing key (proof of possession)."""
    profile.check()
    if keys.member != profile.member:
        raise BadInput(f"the keys belong to {keys.member}, not {profile.member}")
    public = keys.public
    request = JoinRequest(
        v=1,
        request_id=new_id(),
        member=profile.member,
        name=profile.name,
        country=profile.country,
        agency_kind=profile.agency_kind,
        jurisdictions=tuple(profile.jurisdictions),
        endpoint=profile.endpoint,
        keys=JoinKeys(
            signing=PublicKeyInfo("ed25519", b64(public.signing), public.signing_keyid),
            encryption=PublicKeyInfo("x25519", b64(public.encryption), public.encryption_keyid),
        ),
        schemas={k: tuple(v) for k, v in profile.schemas.items()},
        requested_at=format_ts(now() if at is None else at),
        conformance=tuple(conformance),
        federation=profile.federation,
        contact=profile.contact,
    )
    payload = request.to_bytes()
    JoinRequest.parse(payload)  # what we sign must be what the operator can read
    return sign(PT_JOIN_REQUEST, payload, keys.signing_key)


def partner_facts(profile: PartnerProfile) -> dict[str, Any]:
    """The facts the policy reads about the partner (for ``ibex partner compat``)."""
    return {
        "id": profile.member,
        "name": profile.name,
        "country": profile.country,
        "agency_kind": profile.agency_kind,
        "jurisdictions": list(profile.jurisdictions),
        "schemas": {k: list(v) for k, v in profile.schemas.items()},
    }
