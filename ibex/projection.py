"""Field-level minimisation: keep only allowed fields of a record, and check that it was done.

A field is a top-level name (``nationalities``) or a dotted path into objects and arrays of
objects (``place_of_birth.country``, ``aliases.surname``). Allowing a field allows everything
under it. The provider projects with :func:`project`; the gateway checks every record it receives
with :func:`fields_outside` — the same definition on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def project(record: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The record with only ``fields`` (and what lies under them) kept."""
    wanted = set(fields)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in wanted:
            out[key] = value
            continue
        prefix = key + "."
        inner = [f[len(prefix) :] for f in wanted if f.startswith(prefix)]
        if not inner:
            continue
        if isinstance(value, Mapping):
            sub = project(value, inner)
            if sub:
                out[key] = sub
        elif isinstance(value, list):
            items = [project(v, inner) for v in value if isinstance(v, Mapping)]
            items = [i for i in items if i]
            if items:
                out[key] = items
    return out


def leaf_paths(record: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Every path that ends in a value (not an object or an array of objects)."""
    out: set[str] = set()
    for key, value in record.items():
        path = prefix + key
        if isinstance(value, Mapping) and value:
            out |= leaf_paths(value, path + ".")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for v in value:
                out |= leaf_paths(v, path + ".")
        else:
            out.add(path)
    return out


def covered(path: str, allowed: Iterable[str]) -> bool:
    """True when ``path`` is an allowed field or lies under one."""
    return any(path == a or path.startswith(a + ".") for a in allowed)


def fields_outside(record: Mapping[str, Any], allowed: Iterable[str]) -> set[str]:
    """The record's leaf paths that no allowed field covers (empty when minimised correctly)."""
    allowed = tuple(allowed)
    return {p for p in leaf_paths(record) if not covered(p, allowed)}


def released(record: Mapping[str, Any], allowed: Iterable[str]) -> set[str]:
    """Which allowed fields this record actually releases (for ``fields_released``)."""
    leaves = leaf_paths(record)
    return {a for a in allowed if any(p == a or p.startswith(a + ".") for p in leaves)}
