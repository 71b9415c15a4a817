"""A whole federation on loopback: set up, start, stop. Used by ``ibex demo`` and the e2e tests.

Everything is real: keys and SQLCipher stores in a directory, the broker and every connector as
gunicorn processes on 127.0.0.1 ports, the embedded Rego engine. One copy of this machinery
serves both the demo and the tests, so the tests exercise what a new user runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ibex.demoproxy import Relay
from ibex.errors import ConfigError
from ibex.jsonio import dumps
from ibex.keys import MemberKeys
from ibex.messages import ENTITY_TYPES
from ibex.serve import gunicorn_argv
from ibex.store import generate_db_key_file, load_db_key, open_encrypted

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICIES = REPO / "policies"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class MemberSetup:
    id: str
    name: str
    country: str
    kind: str
    jurisdictions: tuple[str, ...]
    schemas: Mapping[str, tuple[str, ...]]


ALL_ENTITIES = ENTITY_TYPES


def _all(version: str = "1.0") -> dict[str, tuple[str, ...]]:
    return {e: (version,) for e in ALL_ENTITIES}


DEMO_MEMBERS: tuple[MemberSetup, ...] = (
    MemberSetup("CA-CBSA", "Canada Border Services Agency", "CA", "border", ("CA",), _all()),
    MemberSetup("CA-RCMP", "Royal Canadian Mounted Police", "CA", "police", ("CA",), _all()),
    MemberSetup("US-CBP", "U.S. Customs and Border Protection", "US", "customs", ("US",), _all()),
    MemberSetup(
        "US-USCG",
        "United States Coast Guard",
        "US",
        "coast_guard",
        ("US",),
        {"vessel": ("1.0",), "person": ("1.0",), "crossing": ("1.0",), "alert": ("1.0",)},
    ),
    MemberSetup("MX-INM", "Instituto Nacional de Migración", "MX", "immigration", ("MX",), _all()),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def busy_ports(ports: Sequence[int]) -> list[int]:
    """The ports of ``ports`` that cannot be bound on 127.0.0.1 (something listens there)."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As gunicorn does: a port whose last connection lingers in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                busy.append(port)
    return busy


def _secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
    finally:
        os.close(fd)
    return path


def _read(path: Path | None) -> str | None:
    return path.read_text().strip() if path is not None else None


def _toml(values: Mapping[str, Any]) -> str:
    lines = []
    for k, v in values.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int | float):
            lines.append(f"{k} = {v}")
        else:
            lines.append(f"{k} = {dumps(str(v)).decode()}")
    return "\n".join(lines) + "\n"


@dataclass
class Node:
    """One process of the federation: the broker or a connector."""

    name: str
    kind: str  # "broker" or "connector"
    port: int
    config: Path
    token: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    endpoint: str | None = None  # what the federation document lists, when a relay is in front

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass
class LocalFederation:
    """A federation directory and its processes."""

    root: Path
    members: Sequence[MemberSetup] = DEMO_MEMBERS
    broker_port: int | None = None
    policies_dir: Path = DEFAULT_POLICIES
    broker_id: str = "IBEX-BROKER"
    extra_broker_settings: Mapping[str, Any] = field(default_factory=dict)
    extra_connector_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Fault injection (demo and tests): members reached through a relay that can delay answers,
    # and members whose own way to the broker passes a relay that can alter answers.
    relayed: frozenset[str] = frozenset()
    broker_relayed: frozenset[str] = frozenset()
    nodes: dict[str, Node] = field(default_factory=dict)
    relays: dict[str, Relay] = field(default_factory=dict)

    # --- set-up --------------------------------------------------------------------------------

    def create(self, *, register: Sequence[str] | None = None) -> None:
        """Write keys, database keys, tokens and configurations; register ``register`` members
        (default: all) with the broker."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        port = self.broker_port or free_port()
        bdir = self.root / "broker"
        keys = bdir / "keys"
        MemberKeys.generate(self.broker_id).save(keys, overwrite=True)
        generate_db_key_file(keys / "db.key", overwrite=True)
        oversight = _secret(keys / "oversight.token", secrets.token_urlsafe(24))
        settings: dict[str, Any] = {
            "broker_id": self.broker_id,
            "federation": "ibex-demo",
            "data_dir": bdir / "data",
            "keys_dir": keys,
            "db_key_file": keys / "db.key",
            "policies_dir": self.policies_dir,
            "oversight_token_file": oversight,
            "host": LOOPBACK,
            "port": port,
            "checkpoint_every": 100,
            "checkpoint_seconds": 10,
            **self.extra_broker_settings,
        }
        (bdir / "broker.toml").write_text(_toml(settings))
        self.nodes["broker"] = Node("broker", "broker", port, bdir / "broker.toml", oversight)
        for index, m in enumerate(self.members):
            # With a fixed broker port, the connectors take the ports after it, in member order.
            self._create_member(m, port + 1 + index if self.broker_port else free_port())
        self.register(register if register is not None else [m.id for m in self.members])

    def _create_member(self, m: MemberSetup, port: int) -> None:
        mdir = self.root / m.id
        keys = mdir / "keys"
        MemberKeys.generate(m.id).save(keys, overwrite=True)
        generate_db_key_file(keys / "db.key", overwrite=True)
        token = _secret(keys / "gateway.token", secrets.token_urlsafe(24))
        node = Node(m.id, "connector", port, mdir / "connector.toml", token)
        broker_url = self.nodes["broker"].url
        if m.id in self.relayed:
            relay = Relay(node.url)
            self.relays[f"to:{m.id}"] = relay
            node.endpoint = relay.url
        if m.id in self.broker_relayed:
            relay = Relay(broker_url)
            self.relays[f"from:{m.id}"] = relay
            broker_url = relay.url
        settings: dict[str, Any] = {
            "member_id": m.id,
            "data_dir": mdir / "data",
            "keys_dir": keys,
            "db_key_file": keys / "db.key",
            "gateway_token_file": token,
            "broker_url": broker_url,
            "broker_public_key_file": self.root
            / "broker"
            / "keys"
            / f"{self.broker_id}.public.json",
            "host": LOOPBACK,
            "port": port,
            "federation_max_age_seconds": 1.0,
            **self.extra_connector_settings.get(m.id, {}),
        }
        (mdir / "connector.toml").write_text(_toml(settings))
        self.nodes[m.id] = node

    def register(self, member_ids: Sequence[str]) -> None:
        """Add members to the broker's registry (re-signing the federation document)."""
        from broker.members import MemberRegistry, MemberSpec  # the front door may import it

        bdir = self.root / "broker"
        keys = MemberKeys.load(bdir / "keys", self.broker_id)
        (bdir / "data").mkdir(parents=True, exist_ok=True)
        db_key = load_db_key(bdir / "keys" / "db.key")
        conn = open_encrypted(bdir / "data" / "broker.db", db_key, create=True)
        try:
            registry = MemberRegistry(
                conn, keys, federation="ibex-demo", endpoint=self.nodes["broker"].url
            )
            for m in self.members:
                if m.id not in member_ids:
                    continue
                registry.add(
                    MemberSpec(
                        id=m.id,
                        name=m.name,
                        country=m.country,
                        agency_kind=m.kind,
                        jurisdictions=m.jurisdictions,
                        endpoint=self.nodes[m.id].endpoint or self.nodes[m.id].url,
                        keys=MemberKeys.load(self.root / m.id / "keys", m.id).public,
                        schemas=m.schemas,
                        valid_from=time.time() - 3600,
                    )
                )
        finally:
            conn.close()

    # --- processes -----------------------------------------------------------------------------

    def start(self, names: Sequence[str] | None = None, *, workers: int = 1) -> None:
        for relay in self.relays.values():
            relay.start()
        chosen = names or ["broker", *[m.id for m in self.members]]
        for name in chosen:
            self._spawn(self.nodes[name], workers)
        for name in chosen:
            self.wait_ready(name)

    def _spawn(self, node: Node, workers: int) -> None:
        app = "broker.wsgi:create()" if node.kind == "broker" else "connectors.wsgi:create()"
        var = "IBEX_BROKER_CONFIG" if node.kind == "broker" else "IBEX_CONNECTOR_CONFIG"
        argv = gunicorn_argv(app, host=LOOPBACK, port=node.port, workers=workers, name=node.name)
        log = (self.root / f"{node.name}.log").open("ab")
        env = {**os.environ, var: str(node.config), "IBEX_GUNICORN_THREADS": "8"}
        node.process = subprocess.Popen(  # noqa: S603 - argv is ours
            argv, env=env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        node = self.nodes[name]
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if node.process is not None and node.process.poll() is not None:
                raise ConfigError(
                    f"{name} exited with status {node.process.returncode}; "
                    f"see {self.root / (name + '.log')}"
                )
            try:
                resp = httpx.get(node.url + "/readyz", timeout=2.0, trust_env=False)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise ConfigError(f"{name} was not ready after {timeout:.0f} s ({last})")

    def stop(self, names: Sequence[str] | None = None, *, sig: int = signal.SIGTERM) -> None:
        if names is None:
            for relay in self.relays.values():
                relay.stop()
            self.relays = {}
        chosen = names or list(self.nodes)
        for name in chosen:
            proc = self.nodes[name].process
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
        for name in chosen:
            proc = self.nodes[name].process
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            self.nodes[name].process = None

    @contextlib.contextmanager
    def running(self, *, workers: int = 1) -> Iterator[LocalFederation]:
        try:
            self.start(workers=workers)
            yield self
        finally:
            self.stop()

    def seed(self, member: str, entity_type: str, records: Sequence[Mapping[str, Any]]) -> int:
        """Load records into a member's encrypted store (all or nothing), as an import would."""
        return self.seed_batches(member, [(entity_type, records)])

    def seed_batches(
        self,
        member: str,
        batches: Iterable[tuple[str, Sequence[Mapping[str, Any]]]],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Load ``(entity type, records)`` batches into a member's store, each batch all or
        nothing (validated against the shared schemas), calling ``progress(count)`` after each."""
        from connectors.records import RecordStore  # the front door may import it

        data = self.root / member / "data"
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)  # records are personal data, even synthetic ones: owner only
        key = load_db_key(self.root / member / "keys" / "db.key")
        store = RecordStore.open_or_create(data / "records.db", key)
        total = 0
        try:
            for entity_type, records in batches:
                count = store.put_many(entity_type, [dict(r) for r in records])
                total += count
                if progress is not None:
                    progress(count)
        finally:
            store.close()
        return total

    def add_console_users(
        self, users: Sequence[tuple[str, str]], *, cost: str = "interactive"
    ) -> list[dict[str, str]]:
        """Create console users (name, role) with random passwords; return them with passwords.

        The demo uses libsodium's "interactive" Argon2id cost so that start-up stays quick; a
        real broker's ``ibex broker-user add`` uses the stronger default.
        """
        from broker.users import UserStore  # the front door may import it

        bdir = self.root / "broker"
        (bdir / "data").mkdir(parents=True, exist_ok=True)
        conn = open_encrypted(
            bdir / "data" / "broker.db", load_db_key(bdir / "keys" / "db.key"), create=True
        )
        created = []
        try:
            store = UserStore(conn, cost=cost)
            for name, role in users:
                password = secrets.token_urlsafe(12)
                store.add(name, role, password)
                created.append({"name": name, "role": role, "password": password})
        finally:
            conn.close()
        return created

    # --- for people and scripts ----------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        broker = self.nodes["broker"]
        return {
            "broker_url": broker.url,
            "broker_config": str(broker.config),
            "audit": {
                "oversight_token": _read(broker.token),
                "broker_public_key": str(
                    self.root / "broker" / "keys" / f"{self.broker_id}.public.json"
                ),
            },
            "members": [
                {
                    "id": m.id,
                    "name": m.name,
                    "connector_url": self.nodes[m.id].url,
                    "config": str(self.nodes[m.id].config),
                    "gateway_token": _read(self.nodes[m.id].token),
                }
                for m in self.members
            ],
        }

    def audit_vkey(self) -> str:
        """The C2SP verifier key of the broker's audit log (what ``ibex audit verify`` trusts)."""
        from broker.services import audit_origin  # the front door may import it
        from ibex.config import BrokerConfig, load_config
        from ibex.note import NoteSigner

        origin = audit_origin(load_config(BrokerConfig, self.nodes["broker"].config))
        keys = MemberKeys.load(self.root / "broker" / "keys", self.broker_id)
        return NoteSigner(origin, keys.signing_key).verifier.vkey

    def gateway(self, member: str, request: Mapping[str, Any], timeout: float = 30.0) -> Any:
        """POST a plain request to a member's gateway, as the agency's own system would."""
        node = self.nodes[member]
        assert node.token is not None
        resp = httpx.post(
            node.url + "/v1/gateway/queries",
            json=dict(request),
            headers={"Authorization": f"Bearer {node.token.read_text().strip()}"},
            timeout=timeout,
            trust_env=False,
        )
        return resp
