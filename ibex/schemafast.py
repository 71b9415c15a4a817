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

import itertools
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
        """The compiled check for a whole schema, or None when it uses something unsupported:
        one generated function where the schema allows (:class:`_Generator`), else nested
        closures."""
        try:
            return _Generator(self, schema_id).function()
        except (Unsupported, KeyError, re.error, SyntaxError, RecursionError, MemoryError):
            pass  # too deep or too big to generate: the closures decide alike, more slowly
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


# --- one generated function per schema --------------------------------------------------------
#
# The closures above cost a Python call per keyword and per property: about 170 calls for one
# person record. The generator below writes the same checks, keyword for keyword, as the source
# of one function, where a check is a line of Python and only formats, patterns and some anyOf
# or oneOf branches are calls. Each line returns False exactly where its closure would; the
# differential test holds both to jsonschema's verdicts.

_TYPE_TESTS = {
    "string": "isinstance({v}, str)",
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
    "integer": "type({v}) is int",
    "number": "type({v}) in _NUMBER",
}
_MAX_SOURCE = 400_000  # characters: a schema past this keeps its closures
_MAX_DEPTH = 18  # nested blocks: CPython refuses more than 20


class _Generator:
    """Writes the check of one schema as the source of one function, ``$ref`` inlined. Values
    from the schema (numbers, sets, patterns, format functions) are constants the source names,
    never spliced into it; only property names are, as Python string literals (``repr``)."""

    def __init__(self, compiler: Compiler, schema_id: str) -> None:
        self._compiler = compiler
        self._schema_id = schema_id
        self._lines: list[str] = []
        self._names: dict[str, Any] = {"_NUMBER": (int, float)}
        self._refs: list[str] = []  # the $ref targets being inlined (a cycle is unsupported)
        self._count = itertools.count()
        self._size = 0

    def function(self, schema: Any = None, base: str = "") -> Check:
        """The check of the whole schema (or of ``schema``, read within ``base``)."""
        if schema is None:
            schema, base = self._compiler._docs[self._schema_id], self._schema_id
        outer, self._lines = self._lines, ["def check(v0):"]
        self._node(schema, base, "v0", 1, None)
        self._lines.append("    return True")
        source = "\n".join(self._lines)
        self._lines = outer
        self._size += len(source)
        if self._size > _MAX_SOURCE:
            raise Unsupported("too large to generate")
        namespace = dict(self._names)
        exec(compile(source, f"<schemafast {self._schema_id}>", "exec"), namespace)  # noqa: S102 - our source
        check: Check = namespace["check"]
        return check

    def _const(self, value: Any) -> str:
        name = f"k{next(self._count)}"
        self._names[name] = value
        return name

    def _emit(self, depth: int, line: str) -> None:
        if depth > _MAX_DEPTH:
            raise Unsupported("nested too deeply to generate")
        self._lines.append("    " * depth + line)

    def _refuse_unless(self, depth: int, condition: str) -> None:
        self._emit(depth, f"if not ({condition}): return False")

    def _node(self, schema: Any, base: str, v: str, depth: int, known: str | None) -> None:
        """Lines that return False where ``v`` fails ``schema`` (``known``: its type, if sure)."""
        if schema is True:
            return
        if schema is False or not isinstance(schema, dict):
            self._emit(depth, "return False")
            return
        handled = {"type"}
        if "type" in schema:  # first: the lines after it rely on it
            self._keyword("type", schema["type"], schema, base, v, depth, known)
            if isinstance(schema["type"], str):
                known = schema["type"]
        if {"properties", "additionalProperties", "propertyNames"} & set(schema):
            handled |= {"properties", "additionalProperties", "propertyNames"}
        for key, value in schema.items():
            if key in _ANNOTATIONS or key.startswith("x-") or key in handled:
                continue
            self._keyword(key, value, schema, base, v, depth, known)
        if len(handled) > 1:
            self._object(schema, base, v, depth, known)

    def _block(self, schema: Any, base: str, v: str, depth: int, known: str | None) -> None:
        """:meth:`_node` as the body of a block (``pass`` where it checks nothing)."""
        before = len(self._lines)
        self._node(schema, base, v, depth, known)
        if len(self._lines) == before:
            self._emit(depth, "pass")

    def _branch(self, schema: Any, base: str, v: str) -> str:
        """An anyOf or oneOf branch as a condition: inline for a list of required members (a
        person's name: a surname or a full name), else a call of a function of its own."""
        if isinstance(schema, dict) and set(schema) - _ANNOTATIONS == {"required"}:
            names = schema["required"]
            if not names:
                return "True"
            present = " and ".join(f"{n!r} in {v}" for n in names)
            return f"(not isinstance({v}, dict) or ({present}))"
        return f"{self._const(self.function(schema, base))}({v})"

    def _object(
        self, schema: dict[str, Any], base: str, v: str, depth: int, known: str | None
    ) -> None:
        if "patternProperties" in schema:
            raise Unsupported("patternProperties")
        additional = schema.get("additionalProperties", True)
        props = schema.get("properties", {})
        if additional is True and "propertyNames" not in schema and not props:
            return
        if known != "object":
            self._emit(depth, f"if isinstance({v}, dict):")
            depth += 1
        n = next(self._count)
        key, item = f"k{n}", f"v{n}"
        self._emit(depth, f"for {key}, {item} in {v}.items():")
        if "propertyNames" in schema:
            self._node(schema["propertyNames"], base, key, depth + 1, None)
        for i, (name, sub) in enumerate(props.items()):
            self._emit(depth + 1, f"{'elif' if i else 'if'} {key} == {name!r}:")
            self._block(sub, base, item, depth + 2, None)
        if additional is True:
            return
        if props:
            self._emit(depth + 1, "else:")
            depth += 1
        self._block(additional, base, item, depth + 1, None)

    def _keyword(  # noqa: PLR0915 - one branch a keyword, as Compiler._keyword
        self,
        key: str,
        value: Any,
        schema: dict[str, Any],
        base: str,
        v: str,
        depth: int,
        known: str | None,
    ) -> None:
        # Where a keyword only applies to one type, "not isinstance(...) or": "False or" where
        # the type is known.
        not_str = "False" if known == "string" else f"not isinstance({v}, str)"
        not_list = "False" if known == "array" else f"not isinstance({v}, list)"
        not_dict = "False" if known == "object" else f"not isinstance({v}, dict)"
        if key == "$ref":
            target = f"{base}#{value}" if value.startswith("#") else value
            if target in self._refs:
                raise Unsupported("a recursive schema")
            node, doc_id = self._compiler._resolve(value, base)
            self._refs.append(target)
            self._node(node, doc_id, v, depth, known)
            self._refs.pop()
        elif key == "type":
            names = value if isinstance(value, list) else [value]
            self._refuse_unless(depth, " or ".join(_TYPE_TESTS[n].format(v=v) for n in names))
        elif key == "required":
            if value:
                missing = " or ".join(f"{n!r} not in {v}" for n in value)
                self._emit(depth, f"if not ({not_dict}) and ({missing}): return False")
        elif key == "dependentRequired":
            deps = self._const({k: tuple(ns) for k, ns in value.items()})
            self._refuse_unless(
                depth,
                f"{not_dict} or all(all(n in {v} for n in ns) for k, ns in {deps}.items()"
                f" if k in {v})",
            )
        elif key in ("minProperties", "maxProperties"):
            op = ">=" if key == "minProperties" else "<="
            self._refuse_unless(depth, f"{not_dict} or len({v}) {op} {self._const(value)}")
        elif key in ("anyOf", "oneOf"):
            if key == "oneOf" and not _disjoint_types(value):
                raise Unsupported(key)
            branches = [self._branch(s, base, v) for s in value]
            if key == "oneOf":
                self._refuse_unless(depth, " + ".join(f"bool({b})" for b in branches) + " == 1")
            else:
                self._refuse_unless(depth, " or ".join(branches))
        elif key == "allOf":
            for sub in value:
                self._node(sub, base, v, depth, known)
        elif key == "not":
            raise Unsupported(key)  # as in Compiler._keyword
        elif key in ("enum", "const"):
            options = value if key == "enum" else [value]
            if all(isinstance(a, str) for a in options):
                strings = self._const(frozenset(options))
                self._refuse_unless(depth, f"isinstance({v}, str) and {v} in {strings}")
            elif all(type(a) in (str, int, bool) or a is None for a in options):
                allowed = self._const([(type(a), a) for a in options])
                self._refuse_unless(
                    depth, f"any(type({v}) is t and {v} == a for t, a in {allowed})"
                )
            else:
                raise Unsupported(key)
        elif key == "pattern":
            search = self._const(ecma_pattern(value).search)
            self._refuse_unless(depth, f"{not_str} or {search}({v}) is not None")
        elif key == "format":
            func = self._compiler._formats.get(value)
            if func is None:
                raise Unsupported(key)
            self._emit(depth, "try:")
            self._refuse_unless(depth + 1, f"{self._const(func)}({v})")
            self._emit(depth, "except Exception: return False")  # the full validator decides
        elif key in ("minLength", "maxLength"):
            op = ">=" if key == "minLength" else "<="
            self._refuse_unless(depth, f"{not_str} or len({v}) {op} {self._const(value)}")
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">"}.get(key, "<")
            self._refuse_unless(depth, f"type({v}) not in _NUMBER or {v} {op} {self._const(value)}")
        elif key == "items":
            if not isinstance(value, dict) or "prefixItems" in schema:
                raise Unsupported(key)
            if known != "array":
                self._emit(depth, f"if isinstance({v}, list):")
                depth += 1
            item = f"v{next(self._count)}"
            self._emit(depth, f"for {item} in {v}:")
            self._block(value, base, item, depth + 1, None)
        elif key in ("minItems", "maxItems"):
            op = ">=" if key == "minItems" else "<="
            self._refuse_unless(depth, f"{not_list} or len({v}) {op} {self._const(value)}")
        elif key == "uniqueItems":
            if value:  # as in Compiler._keyword: only arrays of strings are decided here
                self._refuse_unless(
                    depth,
                    f"{not_list} or (all(isinstance(x, str) for x in {v})"
                    f" and len(set({v})) == len({v}))",
                )
        else:
            raise Unsupported(key)
