"""The policy decider: the policy engine fed with a query and the members' facts.

The broker decides with it for every (query, target); a connector may run one over its own
local policy directory as a second, independent check (defence in depth). Deny is the default
everywhere below: the engine wrapper turns an engine error, a timeout or an undefined result into
a denial with a reason, and this adapter adds nothing that could allow.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ibex.messages import Decision, Member, Query
from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import PolicyEngine, build_input, make_engine


class PolicyDecider:
    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine

    @classmethod
    def load(
        cls, policies_dir: Path, *, engine: str = "regorus", opa_url: str | None = None
    ) -> PolicyDecider:
        bundle = PolicyBundle.load(policies_dir)
        settings = SimpleNamespace(policy_engine=engine, opa_url=opa_url)
        return cls(make_engine(settings, bundle=bundle))

    @property
    def digest(self) -> str:
        return self.engine.bundle.digest

    def decide(self, query: Query, requester: Member, target: Member, at: float) -> Decision:
        return self.engine.decide(build_input(query, target, requester, at))
