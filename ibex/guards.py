"""Every HTTP route says who may call it: a registry of explicit guards on view functions.

A view is marked with ``@guard(kind, ...)``; the mark is only a label, the view (or the decorator
that wraps it, as the console's role check does) still enforces it. ``tests/unit/
test_route_guards.py`` walks each app's URL map and fails for any endpoint whose view carries no
mark, so a new route cannot be added without someone deciding, in code review, who may call it.

Kinds:

- ``public``: anyone (health, the federation document, checkpoints and proofs, the login page).
- ``member-signed``: the body must carry a member's valid signature (query intake).
- ``broker-signed``: the body must carry the broker's valid signature (a routed query).
- ``witness-signed``: only signatures from trusted witness keys are kept (cosignatures).
- ``gateway-token``: the agency's own gateway bearer token.
- ``oversight``: the oversight credential (a bearer token on the API, a console login with the
  oversight role).
- ``legal-officer``, ``admin``: a console login with that role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Flask

GUARD_KINDS: frozenset[str] = frozenset(
    {
        "public",
        "member-signed",
        "broker-signed",
        "witness-signed",
        "gateway-token",
        "oversight",
        "legal-officer",
        "admin",
    }
)
ATTRIBUTE = "__ibex_guard__"

# Views that kernel helpers add with ``add_url_rule`` rather than define in an app module. They
# are named by module and qualified name, so moving or renaming one fails the guard test instead
# of silently keeping a stale mark. (Marking them with the decorator in their own module would be
# as good; this table is for views whose owners have not done so yet.)
DECLARED: dict[str, frozenset[str]] = {
    "ibex.metrics:init_app.<locals>.metrics": frozenset({"public"}),
    "ibex.openapi:init_app.<locals>.openapi": frozenset({"public"}),
}

F = TypeVar("F", bound=Callable[..., Any])


def guard(*kinds: str) -> Callable[[F], F]:
    """Record on a view which credential it requires (any one of ``kinds``)."""
    chosen = frozenset(kinds)
    if not chosen:
        raise ValueError("a guard names at least one kind: an empty guard would mean nothing")
    unknown = chosen - GUARD_KINDS
    if unknown:
        raise ValueError(f"unknown guard kind(s): {', '.join(sorted(unknown))}")
    if "public" in chosen and len(chosen) > 1:
        raise ValueError("a public view needs no other guard: 'public' stands alone")

    def mark(view: F) -> F:
        setattr(view, ATTRIBUTE, chosen)
        return view

    return mark


def _qualified(view: Callable[..., Any]) -> str:
    return f"{getattr(view, '__module__', '?')}:{getattr(view, '__qualname__', '?')}"


def _framework_static(endpoint: str, view: Callable[..., Any]) -> bool:
    """Flask's own static-file view (app or blueprint): public by construction."""
    module = str(getattr(view, "__module__", ""))
    is_static = endpoint == "static" or endpoint.endswith(".static")
    return is_static and (module == "flask" or module.startswith("flask."))


def guard_of(endpoint: str, view: Callable[..., Any]) -> frozenset[str] | None:
    """The guard recorded for ``view`` (served at ``endpoint``), or None when there is none."""
    seen: set[int] = set()
    current: Any = view
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        marked = getattr(current, ATTRIBUTE, None)
        if isinstance(marked, frozenset):
            return marked
        current = getattr(current, "__wrapped__", None)
    declared = DECLARED.get(_qualified(view))
    if declared is not None:
        return declared
    if _framework_static(endpoint, view):
        return frozenset({"public"})
    return None


def route_guards(app: Flask) -> dict[str, frozenset[str] | None]:
    """Every endpoint of ``app`` with its guard (None where there is none)."""
    endpoints: Iterable[str] = {rule.endpoint for rule in app.url_map.iter_rules()}
    return {ep: guard_of(ep, app.view_functions[ep]) for ep in sorted(endpoints)}
