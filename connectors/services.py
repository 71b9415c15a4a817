"""A connector's long-lived parts, opened once per process (after gunicorn forks).

``data_dir`` holds ``records.db`` (the agency's records), ``references.db`` (hit references),
``nonces.db``, ``disclosures.db`` (the disclosure log) and ``federation.json`` (the last verified
federation document) — all but the last SQLCipher under the connector's database key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from connectors.gateway import Gateway
from connectors.matching import Matcher
from connectors.provider import Provider
from connectors.records import RecordStore
from connectors.references import ReferenceStore
from ibex.auditlog import AuditLog
from ibex.config import ConnectorConfig
from ibex.decider import PolicyDecider
from ibex.errors import ConfigError, Forbidden, KeyFileError, Unauthorized
from ibex.federation import FederationClient
from ibex.keys import MemberKeys, load_public, read_secret_file
from ibex.metrics import InstrumentedAuditLog
from ibex.nonces import NonceStore
from ibex.store import load_db_key

RECORDS_DB = "records.db"


def disclosure_origin(member: str) -> str:
    """The C2SP checkpoint origin line of a connector's disclosure log."""
    return f"{member.lower()}.ibex/disclosures"


@dataclass
class ConnectorServices:
    config: ConnectorConfig
    keys: MemberKeys
    federation: FederationClient
    records: RecordStore
    references: ReferenceStore
    nonces: NonceStore
    log: AuditLog
    provider: Provider
    gateway: Gateway
    local_policy: PolicyDecider | None = None

    @classmethod
    def open(cls, config: ConnectorConfig) -> ConnectorServices:
        if config.broker_public_key_file is None:
            raise ConfigError("broker_public_key_file must name the broker's public key file")
        db_key = load_db_key(config.db_key_file, config.db_key_env)
        keys = MemberKeys.load(config.keys_dir, config.member_id)
        data = Path(config.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        broker_key = load_public(config.broker_public_key_file).signing
        federation = FederationClient(
            config.broker_url,
            [broker_key],
            cache_file=data / "federation.json",
            max_age=config.federation_max_age_seconds,
            max_stale=config.federation_max_stale_seconds,
        )
        records = RecordStore.open_or_create(data / RECORDS_DB, db_key)
        references = ReferenceStore(data / "references.db", db_key)
        nonces = NonceStore(data / "nonces.db", db_key)
        log = InstrumentedAuditLog(
            data / "disclosures.db",
            db_key,
            origin=disclosure_origin(config.member_id),
            signing_key=keys.signing_key,
            create=True,
            checkpoint_every=config.checkpoint_every,
            checkpoint_seconds=config.checkpoint_seconds,
            metrics_name="disclosures",
        )
        local = (
            PolicyDecider.load(
                config.local_policy_dir,
                engine=config.policy_engine,
                opa_url=config.opa_url,
                opa_preloaded=config.opa_bundle_preloaded,
            )
            if config.local_policy_dir is not None
            else None
        )
        matcher = Matcher(records, threshold=config.match_threshold)
        provider = Provider(
            config=config,
            keys=keys,
            federation=federation,
            nonces=nonces,
            records=records,
            matcher=matcher,
            references=references,
            log=log,
            local_policy=local,
        )
        gateway = Gateway(config=config, keys=keys, federation=federation)
        return cls(
            config, keys, federation, records, references, nonces, log, provider, gateway, local
        )

    def close(self) -> None:
        self.gateway.close()
        self.federation.close()
        self.log.close()
        self.nonces.close()
        self.references.close()
        self.records.close()

    def require_gateway_token(self, presented: str | None) -> None:
        """The agency's own systems authenticate to the gateway with a bearer token."""
        path = self.config.gateway_token_file
        if path is None:
            raise Forbidden("the gateway is disabled: no gateway_token_file is configured")
        if not presented:
            raise Unauthorized("the gateway needs a bearer token")
        try:
            expected = read_secret_file(path, what="gateway token file").strip()
        except KeyFileError:
            raise Forbidden("the gateway credential on this connector is unusable") from None
        if not hmac.compare_digest(presented.encode(), expected):
            raise Forbidden("the bearer token is not this connector's gateway token")
