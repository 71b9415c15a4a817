"""The policy decider: the policy engine fed with a query and the members' facts.

The broker decides with it for every (query, target); a connector may run one over its own
local policy directory as a second, independent check (defence in depth). Deny is the default
everywhere below: the engine wrapper turns an engine error, a timeout or an undefined result into
a denial with a reason, and this adapter adds nothing that could allow.

Hot reload: a decider opened over a :class:`~ibex.policy_lifecycle.BundleStore` checks the
store's activation counter at most every ``check_interval`` seconds; when another bundle became
active it materialises it (content-addressed, under ``cache_dir``), loads it, checks its digest,
builds a new engine and swaps it in. If that fails it keeps deciding with the last good bundle
and reports itself not ready (:meth:`PolicyDecider.status`, ``/readyz``); it never decides with
nothing, and never allows by default.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ibex.errors import IbexError, PolicyError
from ibex.messages import Decision, Member, Query
from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import PolicyEngine, build_input, make_engine
from ibex.policy_lifecycle import BundleStore

log = logging.getLogger("ibex.decider")
RETRY_FAILED_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class DeciderStatus:
    """What the decider decides with, and whether that is what it should decide with."""

    ready: bool
    digest: str  # the bundle deciding now
    source: str  # "files" (a policies directory) or "store" (the activated bundle)
    active_digest: str | None  # the bundle the store says is active, if there is a store
    error: str | None  # why the active bundle is not the one deciding


def engine_settings(engine: str, opa_url: str | None, opa_preloaded: bool) -> SimpleNamespace:
    """The settings :func:`ibex.policy_engine.make_engine` reads (a config-like object)."""
    return SimpleNamespace(
        policy_engine=engine, opa_url=opa_url, opa_bundle_preloaded=opa_preloaded
    )


class PolicyDecider:
    def __init__(
        self,
        engine: PolicyEngine,
        *,
        store: BundleStore | None = None,
        cache_dir: Path | None = None,
        engine_kind: str = "regorus",
        opa_url: str | None = None,
        opa_preloaded: bool = False,
        check_interval: float = 1.0,
        version: int = 0,
    ) -> None:
        self.engine = engine
        self._store = store
        self._cache_dir = cache_dir
        self._settings = engine_settings(engine_kind, opa_url, opa_preloaded)
        self._interval = check_interval
        self._version = version
        self._next_check = time.monotonic() + check_interval
        self._reload_lock = threading.Lock()
        self._error: str | None = None
        self._failed_at = 0.0

    @classmethod
    def load(
        cls,
        policies_dir: Path,
        *,
        engine: str = "regorus",
        opa_url: str | None = None,
        opa_preloaded: bool = False,
    ) -> PolicyDecider:
        bundle = PolicyBundle.load(policies_dir)
        return cls(make_engine(engine_settings(engine, opa_url, opa_preloaded), bundle=bundle))

    @classmethod
    def open(
        cls,
        policies_dir: Path,
        *,
        store: BundleStore,
        cache_dir: Path,
        engine: str = "regorus",
        opa_url: str | None = None,
        opa_preloaded: bool = False,
        check_interval: float = 1.0,
    ) -> PolicyDecider:
        """Decide with the store's active bundle, or with ``policies_dir`` while none has been
        activated; follow later activations. An active bundle that does not load at start-up
        is an error (the broker does not start), not a reason to use the files instead."""
        version = store.version()
        record = store.active()
        settings = engine_settings(engine, opa_url, opa_preloaded)
        if record is None:
            bundle = PolicyBundle.load(policies_dir)
        else:
            bundle = materialised(store, record.digest, cache_dir)
        return cls(
            make_engine(settings, bundle=bundle),
            store=store,
            cache_dir=cache_dir,
            engine_kind=engine,
            opa_url=opa_url,
            opa_preloaded=opa_preloaded,
            check_interval=check_interval,
            version=version,
        )

    @property
    def digest(self) -> str:
        return self.engine.bundle.digest

    def decide(self, query: Query, requester: Member, target: Member, at: float) -> Decision:
        self._maybe_refresh()
        return self.engine.decide(build_input(query, target, requester, at))

    # --- hot reload ------------------------------------------------------------------------

    def _maybe_refresh(self) -> None:
        if self._store is not None and time.monotonic() >= self._next_check:
            self.refresh()

    def refresh(self, *, force: bool = False) -> DeciderStatus:
        """Check the store now and switch to its active bundle if that changed. One thread
        reloads; the others keep deciding with the current engine meanwhile."""
        if self._store is None:
            return self.status()
        if not self._reload_lock.acquire(blocking=force):
            return self.status()
        try:
            self._next_check = time.monotonic() + self._interval
            version = self._store.version()
            retry = self._error is not None and (
                force or time.monotonic() - self._failed_at >= RETRY_FAILED_SECONDS
            )
            if version == self._version and not retry:
                return self.status()
            record = self._store.active()
            if record is not None and record.digest != self.digest:
                try:
                    assert self._cache_dir is not None
                    bundle = materialised(self._store, record.digest, self._cache_dir)
                    engine = make_engine(self._settings, bundle=bundle)
                except (IbexError, OSError) as exc:
                    self._error = f"the active policy bundle {record.digest} cannot be used: " + (
                        exc.detail if isinstance(exc, IbexError) else str(exc)
                    )
                    self._failed_at = time.monotonic()
                    log.error("%s; still deciding with %s", self._error, self.digest)
                else:
                    self.engine = engine  # one assignment: requests see the old or the new
                    self._error = None
                    log.info("policy bundle %s is now active", record.digest)
            else:
                self._error = None
            self._version = version
        finally:
            self._reload_lock.release()
        return self.status()

    def status(self) -> DeciderStatus:
        active = self._store.active() if self._store is not None else None
        return DeciderStatus(
            ready=self._error is None,
            digest=self.digest,
            source="files" if active is None else "store",
            active_digest=None if active is None else active.digest,
            error=self._error,
        )

    def check(self) -> None:
        """For ``/readyz``: raise unless the bundle deciding is the active one."""
        self._maybe_refresh()
        if self._error is not None:
            raise PolicyError(self._error)


def materialised(store: BundleStore, digest: str, cache_dir: Path) -> PolicyBundle:
    """Load a stored bundle from ``cache_dir/<hex>``, writing it there first if needed (by
    rename, so gunicorn workers racing to write it never see half a directory)."""
    target = cache_dir / digest.removeprefix("sha256:")
    if not target.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir))
        store.materialise(digest, staging / "b")
        try:
            os.rename(staging / "b", target)
        except OSError:
            pass  # another worker put it there first; it is loaded and checked below
        finally:
            _remove_tree(staging)
    bundle = PolicyBundle.load(target)
    if bundle.digest != digest:
        raise PolicyError(f"the files of bundle {digest} load as {bundle.digest}")
    return bundle


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
