"""The shared JSON Schema registry every IBEX party validates against.

Loads every ``*.schema.json`` below ``schemas/`` (draft 2020-12, versioned ``$id`` of the form
``https://ibex.example/schemas/<category>/<name>/<major>.<minor>``), resolves ``$ref`` by ``$id``
through :mod:`referencing`, and keeps one compiled validator per schema because validation is on the
hot path. Errors are reported all at once, each with the RFC 6901 pointer of the failing instance
location and a message built from the schema keyword only: instance values are criteria and record
contents (personal data), so they never appear in an error.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pycountry
from jsonschema import (
    Draft202012Validator,
    FormatChecker,
    ValidationError,
)
from jsonschema.exceptions import SchemaError
from jsonschema.validators import extend
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012
from stdnum import imo as _stdnum_imo
from stdnum import iso6346 as _stdnum_iso6346

from ibex.errors import BadInput, FieldError, InputTooLarge, SchemaValidationError, UnknownSchema
from ibex.jsonio import loads_strict
from ibex.schemafast import Check, Compiler

DEFAULT_SCHEMA_DIR: Path = Path(
    os.environ.get("IBEX_SCHEMA_DIR") or Path(__file__).resolve().parent.parent / "schemas"
)
ID_PREFIX = "https://ibex.example/schemas/"
META_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
SENSITIVITIES = ("low", "medium", "high", "special")

_ID_RE = re.compile(
    r"https://ibex\.example/schemas/([a-z][a-z0-9_-]*)/([a-z][a-z0-9_-]*)/([0-9]{1,4})\.([0-9]{1,4})"
)
# Keys whose values are data, not subschemas: never scan them for $ref or format.
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """What the policy engine and console know about one entity field."""

    sensitivity: str
    description: str


# --- formats -----------------------------------------------------------------------------------
# Each check returns True for non-strings: "type" reports those, and a format check must never
# raise (an exception here would escape validation as something other than a schema error).

# ICAO Doc 9303 Part 3 codes that are not ISO 3166-1 alpha-3 but appear in travel documents.
ICAO_SPECIAL_CODES = frozenset(
    {"D", "GBD", "GBN", "GBO", "GBP", "GBS", "UNO", "UNA", "UNK", "XXA", "XXB", "XXC", "XXX"}
    | {"EUE", "XOM", "XPO", "XCC", "XBA", "XIM", "XDC"}
)
_PARTIAL_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)
_IMO = re.compile(r"IMO[0-9]{7}")
_ISO6346 = re.compile(r"[A-Z]{3}[UJZR][0-9]{7}")
_VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")
# ISO 3779 transliteration: digits are themselves; letters A-H 1-8, J-N 1-5, P 7, R 9, S-Z 2-9.
_VIN_VALUES = dict(
    zip(
        "0123456789ABCDEFGHJKLMNPRSTUVWXYZ",
        [*range(10), *range(1, 9), *range(1, 6), 7, 9, *range(2, 10)],
        strict=True,
    )
)
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_JURISDICTION = re.compile(r"[A-Z]{2,3}(?:-[A-Z0-9]{1,3})?")


@functools.cache
def _codes() -> dict[str, frozenset[str]]:
    return {
        "alpha2": frozenset(c.alpha_2 for c in pycountry.countries) | {"EU"},
        "alpha3": frozenset(c.alpha_3 for c in pycountry.countries) | ICAO_SPECIAL_CODES,
        "subdivision": frozenset(s.code for s in pycountry.subdivisions),
    }


def _strings_only(check: Callable[[str], bool]) -> Callable[[object], bool]:
    def wrapper(value: object) -> bool:
        return not isinstance(value, str) or check(value)

    return wrapper


def _calendar(*parts: str | None) -> bool:
    numbers = [int(p) for p in parts if p is not None]
    try:
        year, month, day, hour, minute, second = (*numbers, 0, 0, 0)[:6]
        dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return len(numbers) < 7 or (numbers[6] <= 23 and numbers[7] <= 59)


@_strings_only
def _is_partial_date(value: str) -> bool:
    match = _PARTIAL_DATE.fullmatch(value)
    return match is not None and _calendar(match[1], match[2] or "01", match[3] or "01")


@_strings_only
def _is_date_time(value: str) -> bool:
    """RFC 3339 ``date-time``: the UTC offset is mandatory; leap seconds are refused."""
    match = _DATE_TIME.fullmatch(value)
    return match is not None and _calendar(*match.groups())


@_strings_only
def _is_vin(value: str) -> bool:
    """ISO 3779 VIN. The check digit (9th character) is mandatory only for North American
    manufacturers (WMI starting 1-5, 49 CFR 565), so only theirs is verified: a European VIN may
    carry any 9th character. (python-stdnum 2.2 has no VIN module to defer to.)"""
    if _VIN.fullmatch(value) is None:
        return False
    total = sum(_VIN_VALUES[c] * w for c, w in zip(value, _VIN_WEIGHTS, strict=True)) % 11
    return value[0] not in "12345" or value[8] == ("X" if total == 10 else str(total))


@_strings_only
def _is_jurisdiction(value: str) -> bool:
    if _JURISDICTION.fullmatch(value) is None:
        return False
    kind = "subdivision" if "-" in value else "alpha2" if len(value) == 2 else "alpha3"
    return value in _codes()[kind] and value not in ICAO_SPECIAL_CODES


@_strings_only
def _is_uri(value: str) -> bool:
    if any(c.isspace() or not c.isprintable() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme) and bool(parts.netloc or parts.path)


_FORMATS: dict[str, Callable[[object], bool]] = {
    "date": _strings_only(
        lambda v: (m := _DATE.fullmatch(v)) is not None and _calendar(*m.groups())
    ),
    "date-time": _is_date_time,
    "uri": _is_uri,
    "ibex-country-alpha3": _strings_only(lambda v: v in _codes()["alpha3"]),
    "ibex-partial-date": _is_partial_date,
    "ibex-imo": _strings_only(lambda v: bool(_IMO.fullmatch(v) and _stdnum_imo.is_valid(v))),
    "ibex-iso6346": _strings_only(
        lambda v: bool(_ISO6346.fullmatch(v) and _stdnum_iso6346.is_valid(v))
    ),
    "ibex-vin": _is_vin,
    "ibex-jurisdiction": _is_jurisdiction,
}


def format_checker() -> Any:
    """jsonschema's default checkers plus the IBEX formats (``date`` and ``date-time`` replaced by
    strict versions that need no optional dependency)."""
    checker = FormatChecker()
    for name, func in _FORMATS.items():
        checker.checks(name)(func)
    return checker


# --- ECMA-262 pattern semantics -----------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    """JSON Schema patterns are ECMA-262: ``\\d`` is ASCII only and a final ``$`` matches only at
    the very end. Python's ``$`` also matches before a trailing newline, which would let
    ``"CA-CBSA\\n"`` pass ``^[A-Z]{2}-[A-Z0-9]{2,16}$``."""
    trailing = len(pattern) - len(pattern.rstrip("$"))
    if trailing == 1 and (len(pattern) - 1 - len(pattern[:-1].rstrip("\\"))) % 2 == 0:
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


def _pattern_keyword(validator: Any, pattern: str, instance: object, schema: Any) -> Iterator[Any]:
    if isinstance(instance, str) and not _compile(pattern).search(instance):
        yield ValidationError(f"does not match {pattern!r}")


_Validator: Any = extend(Draft202012Validator, validators={"pattern": _pattern_keyword})


# --- errors without values ------------------------------------------------------------------


def _escape(token: object) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _pointer(path: Iterable[object]) -> str:
    return "".join("/" + _escape(p) for p in path)


_MESSAGES = {
    "pattern": "does not match pattern {v!r}",
    "format": "is not valid under format {v!r}",
    "const": "is not the required constant {v!r}",
    "minLength": "is shorter than {v} characters",
    "maxLength": "is longer than {v} characters",
    "minimum": "is less than the minimum of {v}",
    "maximum": "is greater than the maximum of {v}",
    "exclusiveMinimum": "is not greater than {v}",
    "exclusiveMaximum": "is not less than {v}",
    "multipleOf": "is not a multiple of {v}",
    "minItems": "has fewer than {v} items",
    "maxItems": "has more than {v} items",
    "uniqueItems": "has repeated items",
    "minProperties": "has fewer than {v} properties",
    "maxProperties": "has more than {v} properties",
    "not": "matches a form that is not allowed",
    "contains": "has no item of the required form",
    "minContains": "has too few items of the required form",
    "maxContains": "has too many items of the required form",
    "items": "has more items than allowed",
    "unevaluatedProperties": "has properties that are not allowed",
    "unevaluatedItems": "has items that are not allowed",
}


def _required_sets(subschemas: object) -> list[Any] | None:
    """For ``anyOf: [{required: [...]}, ...]`` return the property sets, else None."""
    if not isinstance(subschemas, list):
        return None
    sets = [s.get("required") for s in subschemas if isinstance(s, dict) and set(s) == {"required"}]
    return sets if len(sets) == len(subschemas) else None


def _field_errors(err: Any) -> Iterator[FieldError]:
    base = _pointer(err.absolute_path)
    keyword, value, instance = err.validator, err.validator_value, err.instance
    if "propertyNames" in err.absolute_schema_path and isinstance(instance, str):
        # The failing instance is a property *name* (names may be echoed, values may not).
        inner = next(_field_errors_for(keyword, value, err, base), FieldError(base, "is invalid"))
        yield FieldError(base + "/" + _escape(instance), "property name " + inner.message)
        return
    yield from _field_errors_for(keyword, value, err, base)


def _field_errors_for(keyword: Any, value: Any, err: Any, base: str) -> Iterator[FieldError]:
    instance = err.instance
    if keyword == "required":
        # jsonschema yields one error per missing name; point at where the member should be.
        for name in value:
            if err.message == f"{name!r} is a required property":
                yield FieldError(
                    f"{base}/{_escape(name)}", f"required property {name!r} is missing"
                )
                return
        yield FieldError(base, "a required property is missing")
    elif keyword == "dependentRequired":
        for trigger, needed in value.items():
            for name in needed:
                if err.message == f"{name!r} is a dependency of {trigger!r}":
                    yield FieldError(
                        f"{base}/{_escape(name)}",
                        f"required property {name!r} is missing ({trigger!r} is present)",
                    )
                    return
        yield FieldError(base, "a dependent property is missing")
    elif keyword == "additionalProperties" and isinstance(instance, dict):
        known = err.schema.get("properties", {})
        patterns = err.schema.get("patternProperties", {})
        for key in instance:
            if key not in known and not any(_compile(p).search(str(key)) for p in patterns):
                yield FieldError(
                    f"{base}/{_escape(key)}", f"additional property {key!r} is not allowed"
                )
    elif keyword == "type":
        types = value if isinstance(value, list) else [value]
        yield FieldError(base, "is not of type " + " or ".join(repr(t) for t in types))
    elif keyword == "enum":
        listed = repr(value)
        yield FieldError(
            base, "is not one of the allowed values" + (f" {listed}" if len(listed) <= 300 else "")
        )
    elif keyword in ("anyOf", "oneOf"):
        sets = _required_sets(value)
        if keyword == "anyOf" and sets is not None:
            names = ", ".join(repr(n) for s in sets for n in s)
            yield FieldError(base, f"requires at least one of the properties {names}")
        elif keyword == "anyOf":
            yield FieldError(base, "does not match any of the allowed forms")
        else:
            yield FieldError(base, "must match exactly one of the allowed forms")
    elif keyword is None:
        yield FieldError(base, "is not allowed here")
    elif keyword in _MESSAGES:
        yield FieldError(base, _MESSAGES[keyword].format(v=value))
    else:
        yield FieldError(base, f"fails the {keyword!r} constraint")


# --- the registry ---------------------------------------------------------------------------


def _scan(node: object, key: str) -> Iterator[str]:
    """Every string value of ``key`` in schema positions below ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                yield v
            elif k not in _DATA_KEYWORDS:
                yield from _scan(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _scan(item, key)


class SchemaRegistry:
    """All schemas below ``root``, checked at load time so that validation cannot fail later on
    a broken schema: each file must be a valid 2020-12 schema with a unique versioned ``$id``,
    every ``$ref`` must resolve and every ``format`` must be one the registry can assert."""

    def __init__(self, root: Path = DEFAULT_SCHEMA_DIR, *, max_bytes: int = 1 << 20) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadInput(f"schema directory {self.root} does not exist")
        self._checker = format_checker()
        self._schemas: dict[str, dict[str, Any]] = {}
        self._files: dict[str, Path] = {}
        self._versions: dict[tuple[str, str], list[tuple[tuple[int, int], str]]] = {}
        for path in sorted(self.root.rglob("*.schema.json")):
            self._add(path, self._read(path, max_bytes))
        if not self._schemas:
            raise BadInput(f"no *.schema.json files under {self.root}")
        self._registry: Registry[Any] = (
            Registry()
            .with_resources(
                (sid, DRAFT202012.create_resource(doc)) for sid, doc in self._schemas.items()
            )
            .crawl()
        )
        for sid, doc in self._schemas.items():
            self._check_references(sid, doc)
        self._validators: dict[str, Any] = {
            sid: _Validator(doc, registry=self._registry, format_checker=self._checker)
            for sid, doc in self._schemas.items()
        }
        self._annotations: dict[str, dict[str, FieldInfo]] = {}
        formats = {name: func for name, (func, _raises) in self._checker.checkers.items()}
        compiler = Compiler(self._schemas, formats)
        # The fast path: compiled yes/don't-know checks, tried before jsonschema (see schemafast).
        self._fast: dict[str, Check] = {}
        for sid in self._schemas:
            check = compiler.compile_id(sid)
            if check is not None:
                self._fast[sid] = check

    @staticmethod
    def _read(path: Path, max_bytes: int) -> dict[str, Any]:
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise InputTooLarge(f"schema file {path} is {size} bytes; the limit is {max_bytes}")
            data = path.read_bytes()
        except OSError as exc:
            raise BadInput(f"schema file {path} cannot be read: {exc.strerror}") from None
        try:
            doc = loads_strict(data, max_bytes=max_bytes, what=f"schema file {path}")
        except BadInput as exc:
            if str(path) in exc.detail:
                raise
            raise type(exc)(f"schema file {path}: {exc.detail}") from None
        if not isinstance(doc, dict):
            raise BadInput(f"schema file {path} is not a JSON object")
        if doc.get("$schema", META_SCHEMA) != META_SCHEMA:
            raise BadInput(f"schema file {path} must use $schema {META_SCHEMA}")
        try:
            _Validator.check_schema(doc)
        except SchemaError as exc:
            where = _pointer(exc.absolute_path) or "/"
            raise BadInput(
                f"schema file {path} is not a valid JSON Schema 2020-12 (at {where}): {exc.message}"
            ) from None
        return doc

    def _add(self, path: Path, doc: dict[str, Any]) -> None:
        sid = doc.get("$id")
        match = _ID_RE.fullmatch(sid) if isinstance(sid, str) else None
        if match is None or not isinstance(sid, str):
            raise BadInput(
                f"schema file {path} needs an $id of the form {ID_PREFIX}<category>/<name>/<M>.<m>"
            )
        if sid in self._files:
            raise BadInput(f"schema files {self._files[sid]} and {path} both have $id {sid}")
        category, name, major, minor = match.groups()
        declared = doc.get("x-ibex-version")
        if declared is not None and declared != f"{major}.{minor}":
            raise BadInput(f"schema file {path}: x-ibex-version {declared!r} differs from its $id")
        self._schemas[sid], self._files[sid] = doc, path
        version = (int(major), int(minor))
        self._versions.setdefault((category, name), []).append((version, sid))
        self._versions[(category, name)].sort()

    def _check_references(self, sid: str, doc: dict[str, Any]) -> None:
        resolver = self._registry.resolver(base_uri=sid)
        for ref in _scan(doc, "$ref"):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                raise BadInput(
                    f"schema file {self._files[sid]}: $ref {ref!r} does not resolve"
                ) from None
        for fmt in _scan(doc, "format"):
            if fmt not in self._checker.checkers:
                raise BadInput(f"schema file {self._files[sid]}: format {fmt!r} is not supported")

    # -- lookup ------------------------------------------------------------------------------------

    def schema_ids(self) -> list[str]:
        return sorted(self._schemas)

    def resolve_id(self, name_or_id: str) -> str:
        """A full ``$id``, ``category/name/M.m``, ``category/name`` or a bare ``name``; the short
        forms pick the highest version. A bare name held by two categories is refused."""
        if isinstance(name_or_id, str):
            if name_or_id in self._schemas:
                return name_or_id
            parts = name_or_id.strip("/").split("/")
            if len(parts) == 3 and ID_PREFIX + "/".join(parts) in self._schemas:
                return ID_PREFIX + "/".join(parts)
            if len(parts) == 2 and tuple(parts) in self._versions:
                return self._versions[(parts[0], parts[1])][-1][1]
            if len(parts) == 1:
                found = [key for key in self._versions if key[1] == parts[0]]
                if len(found) == 1:
                    return self._versions[found[0]][-1][1]
                if len(found) > 1:
                    options = ", ".join(sorted("/".join(k) for k in found))
                    raise UnknownSchema(
                        f"schema name {parts[0]!r} is ambiguous; use one of {options}"
                    )
        shown = repr(name_or_id)[:100]
        raise UnknownSchema(f"no schema {shown}; known: {', '.join(self.schema_ids())}")

    # -- validation --------------------------------------------------------------------------------

    def validate(self, instance: object, schema: str) -> None:
        """Raise :class:`SchemaValidationError` listing every error, sorted by pointer. A missing
        required property is reported at the pointer where it should be (``/imo``), an extra
        property at its own pointer; other errors at the failing value's pointer."""
        sid = self.resolve_id(schema)
        if self.fast_accepts(instance, sid):
            return
        try:
            found = {
                fe
                for err in self._validators[sid].iter_errors(instance)
                for fe in _field_errors(err)
            }
        except RecursionError:
            found = {FieldError("", "is nested too deeply to validate")}
        if found:
            errors = sorted(found, key=lambda e: (e.pointer, e.message))
            noun = "error" if len(errors) == 1 else "errors"
            raise SchemaValidationError(f"{len(errors)} {noun} against schema {sid}", errors=errors)

    def fast_accepts(self, instance: object, schema_id: str) -> bool:
        """True only when the compiled fast path says ``instance`` is certainly valid."""
        check = self._fast.get(schema_id)
        if check is None:
            return False
        try:
            return check(instance)
        except (TypeError, ValueError, RecursionError):
            return False

    def full_is_valid(self, instance: object, schema: str) -> bool:
        """jsonschema's own verdict, bypassing the fast path (the differential test's oracle)."""
        try:
            return bool(self._validators[self.resolve_id(schema)].is_valid(instance))
        except RecursionError:
            return False

    def fast_compiled(self) -> frozenset[str]:
        """The schema ids that have a compiled fast path (for tests and diagnostics)."""
        return frozenset(self._fast)

    def is_valid(self, instance: object, schema: str) -> bool:
        sid = self.resolve_id(schema)
        if self.fast_accepts(instance, sid):
            return True
        try:
            return bool(self._validators[sid].is_valid(instance))
        except RecursionError:
            return False

    # -- entities ----------------------------------------------------------------------------------

    def entity_types(self) -> dict[str, str]:
        return {
            name: "{}.{}".format(*versions[-1][0])
            for (category, name), versions in sorted(self._versions.items())
            if category == "entities" and name != "common"
        }

    def _entity_id(self, entity_type: str) -> str:
        if entity_type not in self.entity_types():
            raise UnknownSchema(f"no entity type {repr(entity_type)[:100]}")
        return self._versions[("entities", entity_type)][-1][1]

    def fields(self, entity_type: str) -> list[str]:
        """Top-level field names, in schema order (``record`` included: it is a real field)."""
        return list(self._schemas[self._entity_id(entity_type)].get("properties", {}))

    def annotations(self, entity_type: str) -> dict[str, FieldInfo]:
        """Every field path (``place_of_birth.country``; array items are transparent, so
        ``aliases.surname``) with its sensitivity and description, following ``$ref``. A nested
        field is at least as sensitive as its parent; an unannotated field counts as ``high``."""
        sid = self._entity_id(entity_type)
        if sid not in self._annotations:
            out: dict[str, FieldInfo] = {}
            root = self._registry.resolver(base_uri=sid)
            self._walk(self._schemas[sid], root, "", parent="low", out=out, depth=0)
            self._annotations[sid] = out
        return dict(self._annotations[sid])

    @staticmethod
    def _follow(node: dict[str, Any], resolver: Any) -> tuple[list[dict[str, Any]], Any]:
        chain = [node]
        while isinstance(node.get("$ref"), str) and len(chain) < 16:
            resolved = resolver.lookup(node["$ref"])
            node, resolver = resolved.contents, resolved.resolver
            chain.append(node)
        return chain, resolver

    def _walk(
        self,
        node: dict[str, Any],
        resolver: Any,
        prefix: str,
        *,
        parent: str,
        out: dict[str, FieldInfo],
        depth: int,
    ) -> None:
        if depth > 16:
            return
        chain, resolver = self._follow(node, resolver)
        target = chain[-1]
        if isinstance(target.get("items"), dict):
            chain, resolver = self._follow(target["items"], resolver)
            target = chain[-1]
        for name, sub in (target.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            sub_chain, _ = self._follow(sub, resolver)
            desc = next((s["description"] for s in sub_chain if "description" in s), "")
            own = next(
                (s["x-ibex-sensitivity"] for s in sub_chain if "x-ibex-sensitivity" in s), "high"
            )
            level = max(
                own, parent, key=lambda s: SENSITIVITIES.index(s) if s in SENSITIVITIES else 3
            )
            path = f"{prefix}.{name}" if prefix else name
            out[path] = FieldInfo(level, desc)
            self._walk(sub, resolver, path, parent=level, out=out, depth=depth + 1)


_registry: list[SchemaRegistry] = []  # the one registry of this process, once built
_registry_lock = threading.Lock()


def registry() -> SchemaRegistry:
    """The process-wide registry over :data:`DEFAULT_SCHEMA_DIR`, loaded once.

    Loading takes about 0.3 s; a server's request threads all arrive before it exists, and each
    used to build its own copy (32 threads: seconds of CPU at start-up). They wait for one."""
    if not _registry:
        with _registry_lock:
            if not _registry:
                _registry.append(SchemaRegistry())
    return _registry[0]
