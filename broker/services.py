"""The broker's long-lived parts, opened once per process (after gunicorn forks).

Stores live in ``data_dir``: ``broker.db`` (members and the signed federation document),
``nonces.db`` and ``audit.db``, all SQLCipher under one database key. Each gunicorn worker opens
its own connections; SQLite's locking makes them safe to share between workers.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.intake import Intake
from broker.members import MemberRegistry
from broker.routing import Router
from ibex.auditlog import AuditLog
from ibex.config import BrokerConfig
from ibex.decider import PolicyDecider
from ibex.errors import Forbidden, KeyFileError, Unauthorized
from ibex.keys import MemberKeys, read_secret_file
from ibex.metrics import InstrumentedAuditLog, observe_stage
from ibex.nonces import NonceStore
from ibex.policy_lifecycle import BundleStore
from ibex.store import load_db_key, open_encrypted

Observer = Callable[[str, float], None]


@dataclass
class BrokerServices:
    config: BrokerConfig
    keys: MemberKeys
    members: MemberRegistry
    nonces: NonceStore
    audit: AuditLog
    decider: PolicyDecider
    router: Router
    intake: Intake
    bundles: BundleStore | None = None

    @classmethod
    def open(cls, config: BrokerConfig, *, observe: Observer | None = None) -> BrokerServices:
        db_key = load_db_key(config.db_key_file, config.db_key_env)
        keys = MemberKeys.load(config.keys_dir, config.broker_id)
        data = Path(config.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        conn = open_encrypted(data / "broker.db", db_key, create=True)
        members = MemberRegistry(conn, keys, federation=config.federation, endpoint=config.url)
        nonces = NonceStore(data / "nonces.db", db_key)
        audit = InstrumentedAuditLog(
            data / "audit.db",
            db_key,
            origin=audit_origin(config),
            signing_key=keys.signing_key,
            create=True,
            checkpoint_every=config.checkpoint_every,
            checkpoint_seconds=config.checkpoint_seconds,
        )
        # Policy bundles activated by two legal officers (ibex.policy_lifecycle) take over from
        # config.policies_dir once one is active; the decider follows later activations. The
        # store has its own connection: its transactions must not interleave with the registry's.
        bundles = BundleStore(
            open_encrypted(data / "broker.db", db_key, create=True),
            audit=audit,
            retention_days=config.audit_retention_days,
        )
        decider = PolicyDecider.open(
            config.policies_dir,
            store=bundles,
            cache_dir=data / "bundles",
            engine=config.policy_engine,
            opa_url=config.opa_url,
            opa_preloaded=config.opa_bundle_preloaded,
        )
        router = Router(max_workers=config.max_fanout_workers)
        intake = Intake(
            config=config,
            signing_key=keys.signing_key,
            members=members,
            nonces=nonces,
            audit=audit,
            decider=decider,
            router=router,
            observe=observe or observe_stage,
        )
        return cls(config, keys, members, nonces, audit, decider, router, intake, bundles)

    def close(self) -> None:
        self.router.close()
        self.audit.close()
        self.nonces.close()
        if self.bundles is not None:
            self.bundles.close()

    # --- who may read what -----------------------------------------------------------------

    def require_token(self, presented: str | None, token_file: Path | None, role: str) -> None:
        """Bearer-token check for a role; no configured token means nobody has the role."""
        if token_file is None:
            raise Forbidden(f"no {role} credential is configured on this broker")
        if not presented:
            raise Unauthorized(f"the {role} endpoints need a bearer token")
        try:
            expected = read_secret_file(token_file, what=f"{role} token file").strip()
        except KeyFileError:
            raise Forbidden(f"the {role} credential on this broker is unusable") from None
        if not hmac.compare_digest(presented.encode(), expected):
            raise Forbidden(f"the bearer token does not grant the {role} role")


def audit_origin(config: BrokerConfig) -> str:
    """The C2SP checkpoint origin line of this broker's audit log."""
    return f"{config.federation}.ibex/{config.broker_id.lower()}/audit"
