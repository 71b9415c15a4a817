"""Policy engines: evaluate ``data.ibex.decision`` for one (query, target) pair, fail closed.

Two engines evaluate the same :class:`~ibex.policy_bundle.PolicyBundle`:

- :class:`RegorusEngine` (the default): the Rust interpreter ``regorus`` embedded in-process.
  A regorus engine object is *unsendable* (using it from a thread other than the one that made
  it aborts with a Rust panic, and so does cloning it there), so each thread builds its own
  engine from the bundle on first use; there is no shared engine and no lock. Dropping one on
  another thread fails too (pyo3 raises and leaks it), so each thread also drops its own: see
  :func:`_thread_engines`.
- :class:`OpaServerEngine`: an Open Policy Agent server reached through ``opa-python-client``
  (REST Data API). The bundle's modules and data are uploaded on first use.

Whatever happens inside an engine, :meth:`decide` returns a :class:`~ibex.messages.Decision`: an
exception, a Rust panic, a timeout, an undefined result or a result that is not exactly the
shape the policy promises is a *deny* with a reason (``engine.error``, ``engine.timeout``,
``engine.undefined``, ``engine.unreachable``), never an allow and never an exception.
"""

from __future__ import annotations

import itertools
import marshal
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from ibex.errors import ConfigError, MessageError, PolicyError
from ibex.messages import Decision, FollowUp, Member, Query, Reason
from ibex.policy_bundle import DATA_ROOT, ENTRYPOINT, HANDLING_CODES, PolicyBundle
from ibex.timeutil import format_ts

DEFAULT_TIMEOUT = 2.0
DEFAULT_CACHE_SIZE = 8192
MAX_REASONS = 64
_RULE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,79}")
_FIELD_RE = re.compile(r"[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63}){0,3}")
_NOW_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_OUTPUT_KEYS = frozenset(
    {"allow", "mode", "fields", "withheld", "handling", "retention_days", "agreement", "reasons"}
)
_ENGINE_SENTENCES = {
    "engine.error": "The policy engine failed ({detail}), so the query is denied.",
    "engine.timeout": "The policy engine did not decide within {detail}, so the query is denied.",
    "engine.undefined": "The policy gave no decision for this query, so it is denied by default.",
    "engine.unreachable": "The policy engine could not be reached ({detail}), so the query is "
    "denied.",
}


# --- the decision input ----------------------------------------------------------------------


def _member_facts(member: Member | Mapping[str, Any], *, with_status: bool) -> dict[str, Any]:
    if isinstance(member, Member):
        facts: dict[str, Any] = {
            "id": member.id,
            "country": member.country,
            "agency_kind": member.agency_kind,
            "jurisdictions": list(member.jurisdictions),
            "status": member.status,
        }
    else:
        facts = {
            "id": member.get("id"),
            "country": member.get("country"),
            "agency_kind": member.get("agency_kind"),
            "jurisdictions": _as_list(member.get("jurisdictions")),
            "status": member.get("status"),
        }
    if not with_status:
        facts.pop("status")
    return facts


def _as_list(value: object) -> object:
    """A list member as a list (absent: empty); any other value as it is, so that the policy,
    which checks types, finds the input malformed. Coercing a string or a mapping to a list
    (its characters, its keys) would make up a well-formed input from a malformed one."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return value


def build_input(
    query: Query | Mapping[str, Any],
    target_member: Member | Mapping[str, Any],
    requester_member: Member | Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    """The document the policy sees as ``input`` for one (query, target) pair (docs/POLICY.md).

    Metadata only: criteria *names*, never values. ``follow_up`` becomes a boolean and the
    officer's confirmation its own member, so the policy reads two booleans instead of an
    optional object. ``now`` is the broker's clock (seconds since the epoch).

    The officer who asks is not in it, nor the case reference (only whether one is cited):
    who asks is personal data and the case reference names an investigation, no rule reads
    either (an OPA sidecar would write both to its decision log), and leaving them out lets the
    same question from any officer about any case share one cached decision. The audit log
    still records both."""
    q = query.to_json() if isinstance(query, Query) else dict(query)
    follow = q.get("follow_up")
    if isinstance(follow, FollowUp):
        follow = {"officer_confirmed": follow.officer_confirmed}
    policy_query: dict[str, Any] = {
        key: q.get(key)
        for key in (
            "requester",
            "purpose",
            "legal_basis",
            "jurisdiction",
            "subject_type",
            "schema_version",
            "mode",
        )
    }
    # Whether the query cites a case, not which one: the policy needs no more (the query schema
    # has already checked its form), the audit log records which, and the same question about
    # any case is then one cached decision. A reference that is not text is malformed, not "no
    # case": like a malformed follow-up, it reaches the policy as a non-boolean (input.invalid).
    case = q.get("case_reference")
    policy_query["case_reference_cited"] = (
        case != "" if isinstance(case, str) else "malformed" if case is not None else False
    )
    if q.get("seriousness") is not None:
        policy_query["seriousness"] = q["seriousness"]
    policy_query["criteria_fields"] = _as_list(q.get("criteria_fields"))
    policy_query["requested_fields"] = _as_list(q.get("requested_fields"))
    # A follow-up that is not an object is malformed, not "no follow-up": it reaches the policy
    # as something that is not a boolean, which the policy refuses (input.invalid).
    policy_query["follow_up"] = (
        isinstance(follow, Mapping)
        if follow is None or isinstance(follow, Mapping)
        else "malformed"
    )
    policy_query["officer_confirmed"] = bool(
        isinstance(follow, Mapping) and follow.get("officer_confirmed") is True
    )
    target = _member_facts(target_member, with_status=True)
    return {
        "query": policy_query,
        "target": target["id"],
        "requester": _member_facts(requester_member, with_status=False),
        "provider": target,
        "now": format_ts(now),
    }


# --- turning a result into a Decision --------------------------------------------------------


class _Malformed(Exception):
    """The engine answered, but not with a decision of the promised shape."""


def deny(target: str, policy_digest: str, rule: str, text: str) -> Decision:
    """A denying decision with one reason: what every failure becomes."""
    return Decision(
        target=target,
        allow=False,
        mode="none",
        fields=(),
        withheld=(),
        reasons=(Reason(rule=rule, text=text),),
        policy_digest=policy_digest,
    )


def _engine_deny(target: str, digest: str, rule: str, detail: str = "") -> Decision:
    return deny(target, digest, rule, _ENGINE_SENTENCES[rule].format(detail=detail))


# Checked field lists and reasons, by value: decisions repeat the same lists and sentences, and
# checking one is dearer than looking it up. Bounded; only values that passed every check are
# kept, so a lookup hit is exactly as good as the check.
_CHECKED_LISTS: dict[tuple[object, ...], tuple[str, ...]] = {}
_CHECKED_REASONS: dict[tuple[object, ...], Reason] = {}
_CHECKED_MAX = 16384


def _field_list(value: object, what: str) -> tuple[str, ...]:
    if type(value) is list:
        try:
            hit = _CHECKED_LISTS.get(tuple(value))
        except TypeError:  # an unhashable member: not a field name, checked below
            hit = None
        if hit is not None:
            return hit
    if not isinstance(value, list) or len(value) > 128:
        raise _Malformed(f"{what} is not a list of at most 128 field names")
    if not all(isinstance(f, str) and _FIELD_RE.fullmatch(f) for f in value):
        raise _Malformed(f"{what} holds something that is not a field name")
    if value != sorted(set(value)):
        raise _Malformed(f"{what} is not sorted and unique")
    checked = tuple(value)
    if len(_CHECKED_LISTS) < _CHECKED_MAX:
        _CHECKED_LISTS[checked] = checked
    return checked


def _optional_text(value: object, limit: int, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _Malformed(f"{what} is not text of at most {limit} characters")
    return value


def _reason(item: object) -> Reason:
    if type(item) is dict and len(item) <= 4:
        key = (
            item.get("rule"),
            item.get("text"),
            item.get("citation"),
            item.get("clause"),
            len(item),
        )
        try:
            hit = _CHECKED_REASONS.get(key)
        except TypeError:  # an unhashable member: checked below
            hit = None
        if hit is not None:
            return hit
    if not isinstance(item, dict) or not {"rule", "text"} <= set(item) <= {
        "rule",
        "text",
        "citation",
        "clause",
    }:
        raise _Malformed("a reason is not {rule, text, citation?, clause?}")
    rule, text = item["rule"], item["text"]
    if not isinstance(rule, str) or not _RULE_RE.fullmatch(rule):
        raise _Malformed("a reason's rule is not a rule id")
    if not isinstance(text, str) or not text or len(text) > 500:
        raise _Malformed("a reason's text is not a sentence of at most 500 characters")
    reason = Reason(
        rule=rule,
        text=text,
        citation=_optional_text(item.get("citation"), 500, "a citation"),
        clause=_optional_text(item.get("clause"), 200, "a clause"),
    )
    if len(_CHECKED_REASONS) < _CHECKED_MAX:
        key = (
            item.get("rule"),
            item.get("text"),
            item.get("citation"),
            item.get("clause"),
            len(item),
        )
        _CHECKED_REASONS[key] = reason
    return reason


def _reasons(value: object) -> tuple[Reason, ...]:
    if not isinstance(value, list) or not value:
        raise _Malformed("reasons is not a non-empty list")
    out = [_reason(item) for item in value]
    if len(out) > MAX_REASONS:
        more = len(out) - (MAX_REASONS - 1)
        out = [
            *out[: MAX_REASONS - 1],
            Reason("reasons.truncated", f"{more} further reasons are not shown."),
        ]
    return tuple(out)


def to_decision(raw: object, target: str, bundle: PolicyBundle) -> Decision:
    """Check a raw ``data.ibex.decision`` value member by member and build the Decision.

    Cheaper than JSON Schema validation (this is on the hot path) and stricter: an allow must
    name an agreement of *this* bundle, carry a handling code and a retention period, and say
    ``allow.agreement``; a deny must release nothing. Raises :class:`_Malformed`."""
    if not isinstance(raw, dict) or set(raw) != _OUTPUT_KEYS:
        raise _Malformed("the result is not a decision object")
    allow, mode = raw["allow"], raw["mode"]
    if not isinstance(allow, bool):
        raise _Malformed("allow is not a boolean")
    fields = _field_list(raw["fields"], "fields")
    withheld = _field_list(raw["withheld"], "withheld")
    reasons = _reasons(raw["reasons"])
    if set(fields) & set(withheld):
        raise _Malformed("a field is both released and withheld")
    if allow:
        agreement, handling, retention = raw["agreement"], raw["handling"], raw["retention_days"]
        if mode not in ("hit_no_hit", "full"):
            raise _Malformed("an allow has no mode")
        if mode == "hit_no_hit" and fields:
            raise _Malformed("a hit/no-hit allow releases fields")
        if not isinstance(agreement, str) or agreement not in bundle.agreements:
            raise _Malformed("an allow does not name an agreement of this bundle")
        if handling not in HANDLING_CODES:
            raise _Malformed("an allow has no handling code")
        if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
            raise _Malformed("an allow has no retention period")
        if not any(r.rule == "allow.agreement" for r in reasons):
            raise _Malformed("an allow does not say which agreement allows it")
    else:
        if mode != "none" or fields:
            raise _Malformed("a deny releases something")
        if any(raw[k] is not None for k in ("agreement", "handling", "retention_days")):
            raise _Malformed("a deny carries terms of disclosure")
        agreement = handling = retention = None
    decision = Decision(
        target=target,
        allow=allow,
        mode=mode,
        fields=fields,
        withheld=withheld,
        reasons=reasons,
        policy_digest=bundle.digest,
        handling=handling,
        retention_days=retention,
        agreement=agreement,
    )
    try:
        decision.check()
    except MessageError as exc:
        raise _Malformed(exc.detail) from None
    return decision


# --- the engines -----------------------------------------------------------------------------


class PolicyEngine(Protocol):
    """What the broker and connectors need from a policy engine."""

    name: str
    bundle: PolicyBundle

    def decide(self, decision_input: Mapping[str, Any]) -> Decision:
        """The decision for one input; never raises, never allows on failure."""
        ...

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """One decision per input, in order."""
        ...


def _is_fatal(exc: BaseException) -> bool:
    """Exceptions that must stop the process rather than become a deny. A Rust panic surfaces
    as ``pyo3_runtime.PanicException``, a BaseException, and *is* turned into a deny."""
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


class _EngineBase:
    """The fail-closed frame shared by both engines: subclasses implement :meth:`_evaluate`."""

    name = "base"

    def __init__(self, bundle: PolicyBundle, *, timeout: float, cache_size: int) -> None:
        if timeout <= 0:
            raise ConfigError("the policy engine timeout must be positive")
        self.bundle = bundle
        self.timeout = timeout
        # Decisions depend on the input and the bundle only, and the shipped policy reads the
        # time only to the day, so identical inputs on the same day may share a decision. The
        # cache is off when a module reads the time of day (PolicyBundle.reads_time_of_day).
        self._cache_size = 0 if bundle.reads_time_of_day else max(cache_size, 0)
        self._cache: OrderedDict[bytes, Decision] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0

    def _evaluate(self, decision_input: Mapping[str, Any]) -> object:
        raise NotImplementedError

    def _cache_key(self, decision_input: Mapping[str, Any]) -> bytes | None:
        """The input, to the day, as bytes; None (no caching) for anything it cannot encode.

        marshal, in format 2 (no back-references, so no dependence on object identity), is a
        faithful encoding: ``loads(dumps(x)) == x`` type for type, so two inputs with one key
        are the same input (True and 1, or "1" and 1, give different keys). Two equal inputs
        built in a different key order give different keys: a miss, never a wrong hit. It costs
        about a third of ``json.dumps(..., sort_keys=True)``, which was most of a cache hit."""
        now = decision_input.get("now")
        if not self._cache_size or not isinstance(now, str) or not _NOW_RE.fullmatch(now):
            return None
        try:
            return marshal.dumps({**decision_input, "now": now[:10]}, 2)
        except ValueError:  # a type marshal does not encode (a subclass, an object)
            return None

    def decide(self, decision_input: Mapping[str, Any]) -> Decision:
        target = decision_input.get("target") if isinstance(decision_input, Mapping) else None
        target = target if isinstance(target, str) else ""
        digest = self.bundle.digest
        key = self._cache_key(decision_input) if isinstance(decision_input, Mapping) else None
        if key is not None:
            with self._cache_lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    self.cache_hits += 1
                    return cached
        started = time.monotonic()
        try:
            raw = self._evaluate(decision_input)
        except _Unreachable as exc:
            return _engine_deny(target, digest, "engine.unreachable", str(exc))
        except _TimedOut:
            return _engine_deny(target, digest, "engine.timeout", f"{self.timeout:g} s")
        except BaseException as exc:
            if _is_fatal(exc):
                raise
            return _engine_deny(target, digest, "engine.error", type(exc).__name__)
        if time.monotonic() - started > self.timeout:
            # The embedded engine cannot be interrupted; a decision that came too late is not
            # trusted either, so the deadline holds for both engines.
            return _engine_deny(target, digest, "engine.timeout", f"{self.timeout:g} s")
        if raw is None:
            return _engine_deny(target, digest, "engine.undefined")
        try:
            decision = to_decision(raw, target, self.bundle)
        except _Malformed as exc:
            return _engine_deny(target, digest, "engine.error", f"malformed decision: {exc}")
        if key is not None:
            with self._cache_lock:
                self._cache[key] = decision
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return decision

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        return [self.decide(i) for i in inputs]


class _Unreachable(Exception):
    pass


class _TimedOut(Exception):
    pass


# Each thread's regorus engines, by the RegorusEngine that built them. A regorus engine must
# also be *dropped* on the thread that made it: dropped on another, pyo3 raises RuntimeError
# ("unsendable, but is being dropped on another thread") and leaks it. A threading.local owned
# by each RegorusEngine does exactly that: when the RegorusEngine goes (a policy activation
# replaces it), whichever thread lets go of it clears every thread's slot, and the broker leaked
# one engine per other request thread per activation (about 27 MB each at 1,012 agreements).
# So the slots live in ONE module-level local, never dropped; a RegorusEngine that goes is
# retired here, and each thread drops its own engines of retired RegorusEngines the next time
# it decides, or when it exits (CPython clears a thread's locals on that thread).
_THREAD = threading.local()
_TOKENS = itertools.count(1)


class _Retired:
    """The tokens of RegorusEngines that are gone (only ever added to, so its size changes with
    each retirement)."""

    def __init__(self) -> None:
        self.tokens: set[int] = set()
        self.lock = threading.Lock()

    def add(self, token: int) -> None:
        with self.lock:
            self.tokens.add(token)


_RETIRED = _Retired()


def _thread_engines() -> dict[int, Any]:
    """This thread's regorus engines by RegorusEngine token, its retired ones dropped first."""
    engines: dict[int, Any] | None = getattr(_THREAD, "engines", None)
    if engines is None:
        engines = _THREAD.engines = {}
        _THREAD.seen = -1
    if _THREAD.seen != len(_RETIRED.tokens):
        with _RETIRED.lock:
            _THREAD.seen = len(_RETIRED.tokens)
            gone = [token for token in engines if token in _RETIRED.tokens]
        for token in gone:
            del engines[token]  # dropped here, on the thread that made it
    return engines


class RegorusEngine(_EngineBase):
    """The embedded default: one regorus engine per thread, built from the bundle on first use
    in that thread and dropped on that thread too (regorus engines cannot cross threads, see
    the module docstring and :func:`_thread_engines`)."""

    name = "regorus"

    def __init__(
        self,
        bundle: PolicyBundle,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(bundle, timeout=timeout, cache_size=cache_size)
        self._token = next(_TOKENS)
        weakref.finalize(self, _RETIRED.add, self._token)
        self._engine()  # fail at construction, not on the first query, if the bundle is bad

    def _engine(self) -> Any:
        engines = _thread_engines()
        engine = engines.get(self._token)
        if engine is None:
            engine = engines[self._token] = new_regorus_engine(self.bundle)
        return engine

    def _evaluate(self, decision_input: Mapping[str, Any]) -> object:
        engine = self._engine()
        engine.set_input(dict(decision_input))
        return engine.eval_rule(ENTRYPOINT)


def new_regorus_engine(bundle: PolicyBundle, *, tests: bool = False) -> Any:
    """A regorus engine holding the bundle's modules (and its tests when asked) and data."""
    import regorus

    engine = regorus.Engine()
    modules = {**bundle.modules, **(bundle.tests if tests else {})}
    for rel, text in sorted(modules.items()):
        try:
            engine.add_policy(rel, text)
        except Exception as exc:
            raise PolicyError(f"policy module {rel} does not load: {exc}") from None
    engine.add_data_json(bundle.data_json)
    return engine


class OpaServerEngine(_EngineBase):
    """An OPA server through its REST Data API (``opa-python-client``).

    The bundle's modules (``PUT /v1/policies/<path>``) and data (``PUT /v1/data/ibex_data``)
    are uploaded before the first decision and again after any failure, so a restarted server
    is reloaded; each decision is ``POST /v1/data/ibex/decision`` with ``{"input": ...}``.
    Each thread has its own HTTP session.

    With ``preloaded`` (an OPA sidecar started with ``--bundle``, see ibex/opabundle.py), OPA
    owns those paths and refuses uploads: the engine instead checks that a bundle the server
    loaded has IBEX's digest as its manifest revision (``GET /v1/data/system/bundles``) and
    denies everything — never allows — while it does not."""

    name = "opa"

    def __init__(
        self,
        url: str,
        bundle: PolicyBundle,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = DEFAULT_CACHE_SIZE,
        preloaded: bool = False,
    ) -> None:
        super().__init__(bundle, timeout=timeout, cache_size=cache_size)
        self.preloaded = preloaded
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"opa_url {url!r} is not an http(s) URL")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = parts.scheme == "https"
        self._local = threading.local()
        self._uploaded = False
        self._upload_lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from opa_client import OpaClient

            # No retries: a decision waits at most `timeout`, then denies.
            client = OpaClient(
                host=self._host,
                port=self._port,
                ssl=self._ssl,
                timeout=self.timeout,
                retries=0,
            )
            self._local.client = client
        return client

    def upload(self) -> None:
        """Load the bundle into the server (or, when ``preloaded``, check the server holds it);
        raise :class:`~ibex.errors.PolicyError` on failure."""
        if self.preloaded:
            self._check_preloaded()
            self._uploaded = True
            return
        client = self._client()
        try:
            for rel, text in sorted(self.bundle.modules.items()):
                client.update_policy_from_string(text, rel, rego_compat=False)
            client.update_or_create_data(dict(self.bundle.data[DATA_ROOT]), DATA_ROOT)
        except Exception as exc:
            raise PolicyError(
                f"cannot load the policy bundle into OPA at {self.url}: {exc}"
            ) from exc
        self._uploaded = True

    def _check_preloaded(self) -> None:
        import requests

        try:
            resp = requests.get(
                self.url.rstrip("/") + "/v1/data/system/bundles", timeout=self.timeout
            )
            resp.raise_for_status()
            bundles = resp.json().get("result") or {}
        except (requests.RequestException, ValueError, AttributeError) as exc:
            raise PolicyError(f"cannot read the bundles loaded by OPA at {self.url}") from exc
        revisions = (
            {
                (b.get("manifest") or {}).get("revision")
                for b in bundles.values()
                if isinstance(b, dict)
            }
            if isinstance(bundles, dict)
            else set()
        )
        if self.bundle.digest not in revisions:
            raise PolicyError(
                f"OPA at {self.url} has not loaded policy bundle {self.bundle.digest} "
                "(its bundles carry other revisions)"
            )

    def _evaluate(self, decision_input: Mapping[str, Any]) -> object:
        import requests

        if not self._uploaded:
            with self._upload_lock:
                if not self._uploaded:
                    try:
                        self.upload()
                    except PolicyError as exc:
                        cause = exc.__cause__
                        why = type(cause).__name__ if cause else "bundle revision mismatch"
                        raise _Unreachable(why) from exc
        try:
            response = self._client().query_rule(dict(decision_input), "ibex", "decision")
        except requests.Timeout:
            self._uploaded = False
            raise _TimedOut from None
        except requests.HTTPError:
            raise  # the server answered with an error status: engine.error
        except requests.RequestException as exc:
            self._uploaded = False
            raise _Unreachable(type(exc).__name__) from None
        if not isinstance(response, dict):
            return {"malformed": True}
        result = response.get("result")
        if result is None:
            # A server that lost the policy (restarted, or changed behind our back) gets it
            # again before the next decision; this one is denied as undefined.
            self._uploaded = False
        return result

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close_connection()


def make_engine(config: Any, *, bundle: PolicyBundle | None = None) -> PolicyEngine:
    """The engine a configuration asks for (``policy_engine`` "regorus" or "opa" with
    ``opa_url``), over the bundle in ``policies_dir`` (or ``local_policy_dir``)."""
    if bundle is None:
        directory = getattr(config, "policies_dir", None) or getattr(
            config, "local_policy_dir", None
        )
        if directory is None:
            raise ConfigError("no policies directory is configured")
        bundle = PolicyBundle.load(directory)
    kind = getattr(config, "policy_engine", "regorus")
    if kind == "regorus":
        return RegorusEngine(bundle)
    if kind == "opa":
        url = getattr(config, "opa_url", None)
        if not url:
            raise ConfigError("policy_engine 'opa' needs opa_url")
        preloaded = bool(getattr(config, "opa_bundle_preloaded", False))
        return OpaServerEngine(url, bundle, preloaded=preloaded)
    raise ConfigError(f"policy_engine must be regorus or opa, not {kind!r}")
