"""The OPA server engine, against a STAND-IN for OPA (tests/support/opa_standin.py).

No OPA server binary ships with any registry reachable here, so these tests run the real
``opa-python-client`` against a small loopback HTTP server that speaks OPA's REST Data API and
evaluates with regorus. They prove the upload, the query path and the fail-closed handling of
an unreachable or misbehaving server; that the same Rego means the same thing in a second
implementation is proved by the regopy differential test.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ibex.config import BrokerConfig
from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import OpaServerEngine, RegorusEngine, make_engine
from tests.support.opa_standin import OpaStandIn
from tests.support.policy_corpus import corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return PolicyBundle.load(ROOT / "policies")


@pytest.fixture
def standin() -> Iterator[OpaStandIn]:
    server = OpaStandIn().start()
    yield server
    server.stop()


def test_same_decisions_as_regorus_over_the_corpus(
    bundle: PolicyBundle, standin: OpaStandIn
) -> None:
    opa = OpaServerEngine(standin.url, bundle, cache_size=0)
    embedded = RegorusEngine(bundle, cache_size=0)
    inputs = corpus(bundle)
    allowed = 0
    for label, inp in inputs:
        expected = embedded.decide(inp)
        got = opa.decide(inp)
        assert got == expected, label
        allowed += got.allow
    assert 0 < allowed < len(inputs)
    # The bundle was uploaded once, as modules and data, before the first decision.
    puts = [r for r in standin.requests if r.startswith("PUT")]
    assert "PUT /v1/data/ibex_data" in puts
    assert "PUT /v1/policies/ibex/decision.rego" in puts
    assert len(puts) == len(bundle.modules) + 1
    opa.close()


def test_every_decision_carries_the_bundle_digest(
    bundle: PolicyBundle, standin: OpaStandIn
) -> None:
    opa = OpaServerEngine(standin.url, bundle)
    _label, inp = corpus(bundle)[0]
    decision = opa.decide(inp)
    assert decision.policy_digest == bundle.digest
    assert decision.target == inp["target"]
    opa.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_denies_with_a_reason(bundle: PolicyBundle) -> None:
    opa = OpaServerEngine(f"http://127.0.0.1:{_free_port()}", bundle, timeout=1.0)
    _, inp = next((label, i) for label, i in corpus(bundle) if label.endswith("/allowed"))
    decision = opa.decide(inp)
    assert decision.allow is False
    assert decision.mode == "none"
    assert [r.rule for r in decision.reasons] == ["engine.unreachable"]
    opa.close()


def test_server_without_the_policy_gives_undefined_and_denies(
    bundle: PolicyBundle, standin: OpaStandIn
) -> None:
    opa = OpaServerEngine(standin.url, bundle, cache_size=0)
    _, inp = next((label, i) for label, i in corpus(bundle) if label.endswith("/allowed"))
    assert opa.decide(inp).allow is True
    # Someone removes IBEX's policies from the server behind the broker's back.
    for rel in bundle.modules:
        request = urllib.request.Request(f"{standin.url}/v1/policies/{rel}", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    decision = opa.decide(inp)
    assert decision.allow is False
    assert [r.rule for r in decision.reasons] == ["engine.undefined"]
    # The engine uploads the bundle again before its next decision.
    assert opa.decide(inp).allow is True
    opa.close()


def test_make_engine_follows_the_configuration(
    bundle: PolicyBundle, standin: OpaStandIn, tmp_path: Path
) -> None:
    base = {"data_dir": tmp_path, "keys_dir": tmp_path, "policies_dir": ROOT / "policies"}
    embedded = make_engine(BrokerConfig(**base, db_key_env="K"), bundle=bundle)
    assert isinstance(embedded, RegorusEngine)
    remote = make_engine(
        BrokerConfig(**base, db_key_env="K", policy_engine="opa", opa_url=standin.url)
    )
    assert isinstance(remote, OpaServerEngine)
    assert remote.bundle.digest == bundle.digest


def _preload(standin: OpaStandIn, bundle: PolicyBundle, revision: str) -> None:
    """Load the bundle the way `opa run --bundle` would (no upload through the REST API)."""
    from ibex.policy_bundle import DATA_ROOT

    standin.modules = dict(bundle.modules)
    standin.data = {DATA_ROOT: dict(bundle.data[DATA_ROOT])}
    standin.bundles = {"ibex": {"manifest": {"revision": revision, "roots": ["ibex"]}}}


def test_preloaded_bundle_with_our_digest_decides_without_uploading(
    bundle: PolicyBundle, standin: OpaStandIn
) -> None:
    _preload(standin, bundle, bundle.digest)
    opa = OpaServerEngine(standin.url, bundle, preloaded=True, cache_size=0)
    local = RegorusEngine(bundle, cache_size=0)
    inputs = [i for _, i in corpus(bundle)][:20]
    assert [opa.decide(i) for i in inputs] == [local.decide(i) for i in inputs]
    assert not [r for r in standin.requests if r.startswith("PUT")], (
        "a preloaded OPA was written to"
    )


def test_preloaded_bundle_with_another_revision_denies_everything(
    bundle: PolicyBundle, standin: OpaStandIn
) -> None:
    _preload(standin, bundle, "sha256:" + "0" * 64)
    opa = OpaServerEngine(standin.url, bundle, preloaded=True, cache_size=0)
    decisions = [opa.decide(i) for _, i in corpus(bundle)[:20]]
    assert decisions and all(not d.allow for d in decisions)
    assert {d.reasons[0].rule for d in decisions} == {"engine.unreachable"}
    assert "revision" in decisions[0].reasons[0].text


def test_configuration_selects_the_preloaded_mode(bundle: PolicyBundle, tmp_path: Path) -> None:
    config = BrokerConfig(
        data_dir=tmp_path,
        keys_dir=tmp_path,
        policies_dir=ROOT / "policies",
        db_key_env="X",
        policy_engine="opa",
        opa_url="http://127.0.0.1:9",
        opa_bundle_preloaded=True,
    )
    engine = make_engine(config, bundle=bundle)
    assert isinstance(engine, OpaServerEngine) and engine.preloaded
