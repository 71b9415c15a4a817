"""The policy engine wrapper, in one import: ``from ibex.policy import make_engine, build_input``.

The work is split in two modules to keep each one readable: :mod:`ibex.policy_bundle` loads and
checks ``policies/`` (Rego modules, agreements, taxonomy) and computes the bundle digest;
:mod:`ibex.policy_engine` evaluates ``data.ibex.decision`` with regorus or an OPA server and turns
every failure into a deny. :mod:`ibex.policy_testing` runs the Rego unit tests. docs/POLICY.md
describes the input, the output and every rule id.
"""

from __future__ import annotations

from ibex.policy_bundle import ENTRYPOINT, PolicyBundle
from ibex.policy_engine import (
    OpaServerEngine,
    PolicyEngine,
    RegorusEngine,
    build_input,
    deny,
    make_engine,
)

__all__ = [
    "ENTRYPOINT",
    "OpaServerEngine",
    "PolicyBundle",
    "PolicyEngine",
    "RegorusEngine",
    "build_input",
    "deny",
    "make_engine",
]
