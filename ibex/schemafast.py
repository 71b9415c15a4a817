"""A compiled fast path for schema validation: answers "certainly valid" or "ask jsonschema".

jsonschema spends 0.4 to 0.9 ms on one protocol message or entity record (it re-resolves ``$ref``
and re-builds validator objects on every descent). Validation is on every hot path — query intake,
routing, answers, audit appends, imports — so :class:`~ibex.schemas.SchemaRegistry` first runs
the schema compiled here into nested closures, which cost a few microseconds.

It is an accelerator, never the authority: each check is as strict as jsonschema's or stricter,
so a value it accepts is one jsonschema accepts (a differential test holds it to that over every
example, counter-example and random mutations). Whatever it refuses goes to the full validator,
which makes the decision and builds the error list. A schema that uses a keyword this module does
not know is not compiled at all, so a new keyword falls back to jsonschema instead of being
ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

# Keywords that never constrain an instance.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"}
)


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # Stricter than jsonschema (which also takes 1.0 as an integer): strictness only costs a
    # trip to the slow path.
    "integer": lambda v: type(v) is int,
    "number": _is_number,
}


class Unsupported(Exception):
    """The schema uses something this compiler does not handle."""


def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """The registry's pattern semantics: ASCII classes, and a final ``$`` that matches only at
    the very end of the string (Python's also matches before a trailing newline)."""
    trailing = len(pattern) - len(pattern.rstrip("$"))
    if trailing == 1 and (len(pattern) - 1 - len(pattern[:-1].rstrip("\\"))) % 2 == 0:
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]

    # A plain loop: several times faster than all() over a generator in CPython.
    def every(v: Any) -> bool:
        for c in checks:
            if not c(v):
                return False
        return True

    return every


def _disjoint_types(branches: list[Any]) -> bool:
    seen: set[str] = set()
    for b in branches:
        if not isinstance(b, dict) or not isinstance(b.get("type"), str):
            return False
        t = "number" if b["type"] == "integer" else str(b["type"])
        if t in seen:
            return False
        seen.add(t)
    return True


class Compiler:
    """Compiles schemas (resolving ``$ref`` by ``$id``) into yes/don't-know checks."""

    def __init__(
        self, documents: Mapping[str, dict[str, Any]], formats: Mapping[str, Callable[[Any], Any]]
    ) -> None:
        self._docs = documents
        self._formats = formats
        self._refs: dict[str, Check] = {}

    def compile_id(self, schema_id: str) -> Check | None:
        """The compiled check for a whole schema, or None when it uses something unsupported."""
        try:
            return self.compile(self._docs[schema_id], schema_id)
        except (Unsupported, KeyError, re.error):
            return None

    def _resolve(self, ref: str, base: str) -> tuple[dict[str, Any], str]:
        uri, _, fragment = ref.partition("#")
        doc_id = uri or base
        node: Any = self._docs.get(doc_id)
        if node is None:
            raise Unsupported(ref)
        for raw in (p for p in fragment.split("/") if p):
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise Unsupported(ref)
            node = node[part]
        if not isinstance(node, dict):
            raise Unsupported(ref)
        return node, doc_id

    def compile(self, schema: Any, base: str) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False or not isinstance(schema, dict):
            return lambda v: False
        checks: list[Check] = []
        handled: set[str] = set()
        if {"properties", "additionalProperties", "propertyNames"} & set(schema):
            checks.append(self._object(schema, base))
            handled = {"properties", "additionalProperties", "propertyNames"}
        for key, value in schema.items():
            if key in _ANNOTATIONS or key.startswith("x-") or key in handled:
                continue
            checks.append(self._keyword(key, value, schema, base))
        return _all(checks) if checks else (lambda v: True)

    def _object(self, schema: dict[str, Any], base: str) -> Check:
        """``properties``, ``additionalProperties`` and ``propertyNames`` in one pass."""
        if "patternProperties" in schema:
            raise Unsupported("patternProperties")
        additional = schema.get("additionalProperties", True)
        extra: Check | None
        if additional is True:
            extra = None
        elif additional is False:
            extra = lambda v: False  # noqa: E731 - a check, like the others
        else:
            extra = self.compile(additional, base)
        names = self.compile(schema["propertyNames"], base) if "propertyNames" in schema else None
        props = {k: self.compile(s, base) for k, s in schema.get("properties", {}).items()}

        def members(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, x in v.items():
                if names is not None and not names(k):
                    return False
                c = props.get(k)
                if c is None:
                    if extra is not None and not extra(x):
                        return False
                elif not c(x):
                    return False
            return True

        return members

    def _keyword(self, key: str, value: Any, schema: dict[str, Any], base: str) -> Check:  # noqa: PLR0915 - one branch a keyword
        if key == "$ref":
            target = f"{base}#{value}" if value.startswith("#") else value
            if target not in self._refs:
                # Our schemas are not recursive; a cycle would refuse (slow path), never accept.
                self._refs[target] = lambda v: False
                node, doc_id = self._resolve(value, base)
                self._refs[target] = self.compile(node, doc_id)
            return self._refs[target]
        if key == "type":
            names = value if isinstance(value, list) else [value]
            preds = [_TYPES[n] for n in names]
            return preds[0] if len(preds) == 1 else (lambda v: any(p(v) for p in preds))
        if key == "required":
            needed = tuple(value)

            def required(v: Any) -> bool:
                if isinstance(v, dict):
                    for n in needed:
                        if n not in v:
                            return False
                return True

            return required
        if key == "dependentRequired":
            deps = {k: tuple(ns) for k, ns in value.items()}
            return lambda v: (
                not isinstance(v, dict)
                or all(all(n in v for n in ns) for k, ns in deps.items() if k in v)
            )
        if key == "minProperties":
            return lambda v: not isinstance(v, dict) or len(v) >= value
        if key == "maxProperties":
            return lambda v: not isinstance(v, dict) or len(v) <= value
        if key in ("anyOf", "oneOf"):
            subs = [self.compile(s, base) for s in value]
            if key == "oneOf":
                # One fast acceptance proves "exactly one" only when no two branches can hold
                # for the same value: branches with pairwise disjoint types.
                if not _disjoint_types(value):
                    raise Unsupported(key)
                return lambda v: sum(1 for s in subs if s(v)) == 1

            def any_of(v: Any) -> bool:
                for sub in subs:
                    if sub(v):
                        return True
                return False

            return any_of
        if key == "allOf":
            return _all([self.compile(s, base) for s in value])
        if key == "not":
            # "not" would turn a fast refusal into an acceptance: never decided here.
            raise Unsupported(key)
        if key in ("enum", "const"):
            options = value if key == "enum" else [value]
            if all(isinstance(a, str) for a in options):
                strings = frozenset(options)
                return lambda v: isinstance(v, str) and v in strings
            if all(type(a) in (str, int, bool) or a is None for a in options):
                allowed = [(type(a), a) for a in options]
                return lambda v: any(type(v) is t and v == a for t, a in allowed)
            raise Unsupported(key)
        if key == "pattern":
            rx = ecma_pattern(value)
            return lambda v: not isinstance(v, str) or rx.search(v) is not None
        if key == "format":
            func = self._formats.get(value)
            if func is None:
                raise Unsupported(key)

            def fmt(v: Any) -> bool:
                try:
                    return bool(func(v))
                except Exception:  # the full validator decides what a raising format means
                    return False

            return fmt
        if key == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= value
        if key == "maxLength":
            return lambda v: not isinstance(v, str) or len(v) <= value
        if key == "minimum":
            return lambda v: not _is_number(v) or v >= value
        if key == "maximum":
            return lambda v: not _is_number(v) or v <= value
        if key == "exclusiveMinimum":
            return lambda v: not _is_number(v) or v > value
        if key == "exclusiveMaximum":
            return lambda v: not _is_number(v) or v < value
        if key == "items":
            if not isinstance(value, dict) or "prefixItems" in schema:
                raise Unsupported(key)
            item = self.compile(value, base)

            def items(v: Any) -> bool:
                if isinstance(v, list):
                    for x in v:
                        if not item(x):
                            return False
                return True

            return items
        if key == "minItems":
            return lambda v: not isinstance(v, list) or len(v) >= value
        if key == "maxItems":
            return lambda v: not isinstance(v, list) or len(v) <= value
        if key == "uniqueItems":
            if not value:
                return lambda v: True
            # Only arrays of strings are decided here (1 == 1.0 == True subtleties are not).
            return lambda v: (
                not isinstance(v, list)
                or (all(isinstance(x, str) for x in v) and len(set(v)) == len(v))
            )
        raise Unsupported(key)
