"""Mapping files: how an agency's local export becomes records in the shared schema.

A mapping is a small YAML file a data steward writes once per export format::

    version: 1
    entity_type: person                 # optional; checked against --type
    source_id: CLIENT_NO                # local field holding the record id -> record.source_id
    rename: {FAMILY_NAME: name.surname, DOB: date_of_birth}
    split:                              # one local field into two shared fields
      - {field: FULL_NAME, separator: " ", at: last, into: [name.given_names, name.surname]}
    join:                               # several local fields into one
      - {fields: [FIRST, MIDDLE], separator: " ", into: name.given_names}
    lists: {nationalities: ";"}         # a delimited cell -> an array
    code_lists:                         # local codes -> shared codes
      nationalities: country            # built in: names, alpha-2, alpha-3 -> ISO alpha-3
      sex: {Male: M, Female: F}
    date_format: {date_of_birth: ["%d/%m/%Y", "%Y"]}   # strptime patterns -> ISO partial dates
    constants: {record.handling: H2}
    ignore: [INTERNAL_NOTES]

Steps run in that order. Shared field paths are dotted (``name.surname``, ``identifiers.0.value``
for an array item). Anything not mentioned passes through unchanged, so a file already in the
shared shape needs no mapping; whatever does not fit the schema is reported by validation.
The loader is strict: an unknown key, a wrong type or a bad path is refused with its location.
Row errors name the field (a JSON pointer) and never the value.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycountry
import yaml

from ibex.errors import BadInput, FieldError

MAPPING_MAX_BYTES = 1 << 20
TOP_LEVEL = frozenset(
    {"version", "entity_type", "source_id", "rename", "split", "join", "lists", "code_lists"}
    | {"date_format", "constants", "ignore"}
)
_TARGET = re.compile(r"[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|[0-9]{1,3}))*")
_ICAO_SPECIAL = frozenset({"D", "GBD", "GBN", "GBO", "GBP", "GBS", "UNO", "UNA", "UNK", "XXA"})
_ICAO_SPECIAL |= frozenset({"XXB", "XXC", "XXX", "EUE"})


class MappingError(BadInput):
    code = "mapping-invalid"
    title = "Invalid mapping file"


@dataclass(frozen=True, slots=True)
class SplitRule:
    field: str
    into: tuple[str, ...]
    separator: str | None = None  # None: any whitespace
    at: str = "first"
    single: str = ""


@dataclass(frozen=True, slots=True)
class JoinRule:
    fields: tuple[str, ...]
    into: str
    separator: str = " "


@dataclass(frozen=True, slots=True)
class Mapping:
    """A validated mapping; :meth:`apply` turns one source row into one candidate record."""

    entity_type: str | None = None
    source_id: str | None = None
    rename: dict[str, str] = field(default_factory=dict)
    split: tuple[SplitRule, ...] = ()
    join: tuple[JoinRule, ...] = ()
    lists: dict[str, str] = field(default_factory=dict)
    code_lists: dict[str, str | dict[str, str]] = field(default_factory=dict)
    date_format: dict[str, tuple[str, ...]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()

    def apply(self, row: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        """The mapped record and the row's mapping errors. Takes ownership of ``row`` (it is
        changed in place: the importer builds a fresh object per row, and a copy per row
        would cost a tenth of the import budget)."""
        out = row
        errors: list[FieldError] = []
        if self.source_id is not None:
            value = pop_path(out, self.source_id)
            if value is not None:
                set_path(out, "record.source_id", str(value))
        for rule in self.split:
            value = pop_path(out, rule.field)
            if isinstance(value, str):
                for target, part in zip(rule.into, _split(value, rule), strict=True):
                    if part:
                        set_path(out, target, part)
        for join in self.join:
            parts = [pop_path(out, f) for f in join.fields]
            text = join.separator.join(str(p) for p in parts if p not in (None, ""))
            if text:
                set_path(out, join.into, text)
        moved = [(target, pop_path(out, source)) for source, target in self.rename.items()]
        for target, value in moved:
            if value is not None:
                set_path(out, target, value)
        for name in self.ignore:
            pop_path(out, name)
        for target, sep in self.lists.items():
            value = get_path(out, target)
            if isinstance(value, str):
                set_path(out, target, [p.strip() for p in value.split(sep) if p.strip()])
        for target, code_list in self.code_lists.items():
            value = get_path(out, target)
            if value is not None:
                mapped = _map_codes(value, code_list)
                if mapped is None:
                    name = code_list if isinstance(code_list, str) else "of this mapping"
                    errors.append(FieldError(_pointer(target), f"is not in the code list {name}"))
                else:
                    set_path(out, target, mapped)
        for target, patterns in self.date_format.items():
            value = get_path(out, target)
            if isinstance(value, str):
                iso = parse_local_date(value, patterns)
                if iso is None:
                    errors.append(
                        FieldError(_pointer(target), "does not match any date_format pattern")
                    )
                else:
                    set_path(out, target, iso)
        for target, value in self.constants.items():
            # A constant inside an array item (identifiers.0.scheme) completes an item the
            # row has; it does not invent an item the row lacks.
            item = _array_item(target)
            if item is None or get_path(out, item) is not None:
                set_path(out, target, list(value) if isinstance(value, list) else value)
        return out, errors


IDENTITY = Mapping()


def _array_item(path: str) -> str | None:
    """The path up to and including the last numeric step, or None without one."""
    steps = path.split(".")
    numeric = [i for i, step in enumerate(steps) if step.isdigit()]
    return ".".join(steps[: numeric[-1] + 1]) if numeric else None


def _pointer(path: str) -> str:
    return "/" + path.replace("~", "~0").replace(".", "/")


def _split(value: str, rule: SplitRule) -> list[str]:
    text = value.strip()
    if rule.separator is None:
        parts = text.split(None, 1) if rule.at == "first" else text.rsplit(None, 1)
    elif rule.at == "first":
        parts = text.split(rule.separator, 1)
    else:
        parts = text.rsplit(rule.separator, 1)
    parts = [p.strip() for p in parts]
    if len(parts) == 1:
        return [parts[0] if t == rule.single else "" for t in rule.into]
    return parts


# --- nested paths ------------------------------------------------------------------------------


def _steps(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in path.split(".")]


def get_path(obj: Any, path: str) -> Any:
    for step in _steps(path):
        if isinstance(step, int) and isinstance(obj, list) and step < len(obj):
            obj = obj[step]
        elif isinstance(step, str) and isinstance(obj, dict):
            obj = obj.get(step)
        else:
            return None
    return obj


def pop_path(obj: Any, path: str) -> Any:
    """Remove and return the value at ``path``; a flat key with dots is tried first (CSV)."""
    if isinstance(obj, dict) and path in obj:
        return obj.pop(path)
    *head, last = _steps(path)
    parent = get_path(obj, ".".join(str(s) for s in head)) if head else obj
    if isinstance(parent, dict) and isinstance(last, str):
        return parent.pop(last, None)
    return None


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at ``path``, creating objects and arrays (numeric steps) on the way."""
    _set_steps(obj, _steps(path), value)


def _set_steps(obj: dict[str, Any], steps: list[str | int], value: Any) -> None:
    node: Any = obj
    for step, nxt in itertools.pairwise(steps):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(step, int):
            while len(node) <= step:
                node.append(None)
            if not isinstance(node[step], dict | list):
                node[step] = empty
            node = node[step]
        else:
            if not isinstance(node.get(step), dict | list):
                node[step] = empty
            node = node[step]
    last = steps[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


_KEY, _FIELD, _ITEM, _ITEM_FIELD, _PATH = range(5)  # the shapes of a CSV column's path


def column_steps(name: str) -> tuple[str | int, ...]:
    """The path :func:`csv_shaper` puts a column's cells at: a dotted field path split into
    its steps (an all-digit step is an array index), any other column name as one key."""
    return tuple(_steps(name)) if "." in name and _TARGET.fullmatch(name) else (name,)


def csv_header_problem(header: list[str]) -> str | None:
    """Why two columns cannot both be filled in (one's field inside the other's value, a field
    named twice, an array used as an object), or None. The shaper would let the later column
    win and lose the earlier's value, or fail on some row; the file is refused up front."""
    leaves: dict[tuple[str | int, ...], str] = {}  # a column's path -> the column
    inner: dict[tuple[str | int, ...], tuple[str, type]] = {}  # a container's path -> one
    for name in header:  # column inside it, and whether it is an array (int) or object (str)
        steps = column_steps(name)
        if steps in leaves:
            return f"the header's columns {leaves[steps]!r} and {name!r} name the same field"
        if steps in inner:
            return f"the header's column {name!r} is a value, but {inner[steps][0]!r} is inside it"
        for depth in range(1, len(steps)):
            prefix, kind = steps[:depth], type(steps[depth])
            if prefix in leaves:
                return (
                    f"the header's column {leaves[prefix]!r} is a value, but {name!r} is inside it"
                )
            other, other_kind = inner.setdefault(prefix, (name, kind))
            if other_kind is not kind:
                where = ".".join(map(str, prefix))
                return (
                    f"the header's columns {other!r} and {name!r} make {where!r} both an array"
                    " and an object"
                )
        leaves[steps] = name
    return None


def csv_shaper(header: list[str]) -> Callable[[list[str]], dict[str, Any]]:
    """A function turning a CSV row (cells in ``header`` order) into a nested object, with the
    header's dotted paths parsed once per file rather than once per cell. The usual shapes
    (``name.surname``, ``nationalities.0``, ``identifiers.0.value``) are set directly once
    their container exists; anything else, and creating a container, goes through
    :func:`set_path`'s rules."""
    plan: list[tuple[int, int, str, int, str, list[str | int]]] = []
    for index, name in enumerate(header):
        path = column_steps(name)
        if len(path) == 1:
            plan.append((index, _KEY, name, 0, "", []))
            continue
        steps = list(path)
        kinds = [type(step) for step in steps]
        if kinds == [str, str]:
            plan.append((index, _FIELD, str(steps[0]), 0, str(steps[1]), steps))
        elif kinds == [str, int]:
            plan.append((index, _ITEM, str(steps[0]), int(steps[1]), "", steps))
        elif kinds == [str, int, str]:
            plan.append((index, _ITEM_FIELD, str(steps[0]), int(steps[1]), str(steps[2]), steps))
        else:
            plan.append((index, _PATH, name, 0, "", steps))

    def shape(cells: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, kind, key, item, sub, steps in plan:
            value = cells[index]
            if value == "":
                continue
            if kind == _KEY:
                out[key] = value
                continue
            node = out.get(key)
            if kind == _FIELD:
                if not isinstance(node, dict):
                    node = out[key] = {}
                node[sub] = value
            elif kind == _PATH or isinstance(node, dict):
                _set_steps(out, steps, value)  # deeper paths, and headers that contradict
            elif not isinstance(node, list):  # a new array, padded as set_path pads it
                out[key] = [None] * item + [value if kind == _ITEM else {sub: value}]
            elif len(node) <= item:
                _set_steps(out, steps, value)
            elif kind == _ITEM:
                node[item] = value
            elif type(node[item]) is dict:
                node[item][sub] = value
            else:
                _set_steps(out, steps, value)
        return out

    return shape


def unflatten(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row (column -> cell) as a nested object: ``name.surname`` becomes
    ``{"name": {"surname": ...}}``; empty cells are absent fields, not empty strings."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or value == "":
            continue
        if "." in key and _TARGET.fullmatch(key):
            set_path(out, key, value)
        else:
            out[key] = value
    return out


# --- value transforms --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def country_alpha3(value: str) -> str | None:
    """ISO 3166-1 alpha-3 for a country name, alpha-2, alpha-3 or numeric code; ICAO special
    codes (D, XXA ...) pass through. None if unknown."""
    text = value.strip()
    if text.upper() in _ICAO_SPECIAL:
        return text.upper()
    try:
        return str(pycountry.countries.lookup(text).alpha_3)
    except LookupError:
        pass
    # Short names ("Russia" for the Russian Federation): accepted only when unambiguous.
    try:
        found = pycountry.countries.search_fuzzy(text) if len(text) > 3 else []
    except LookupError:
        return None
    return str(found[0].alpha_3) if len(found) == 1 else None


def _map_codes(value: Any, code_list: str | dict[str, str]) -> Any:
    if isinstance(value, list):
        mapped = [_map_codes(v, code_list) for v in value]
        return None if any(m is None for m in mapped) else mapped
    if not isinstance(value, str):
        return None
    if isinstance(code_list, dict):
        return code_list.get(value, code_list.get(value.strip()))
    return country_alpha3(value)


def parse_local_date(value: str, patterns: tuple[str, ...]) -> str | None:
    """The first strptime pattern that parses ``value`` gives an ISO partial date whose
    precision is what the pattern contains: a day, a month, or only a year."""
    text = value.strip()
    for pattern in patterns:
        try:
            parsed = dt.datetime.strptime(text, pattern)
        except ValueError:
            continue
        if any(d in pattern for d in ("%d", "%j")):
            return parsed.strftime("%Y-%m-%d")
        if any(d in pattern for d in ("%m", "%b", "%B")):
            return parsed.strftime("%Y-%m")
        return parsed.strftime("%Y")
    return None


# --- loading -----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one silently winning hides mistakes)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise MappingError(f"duplicate key {key!r} (line {node.start_mark.line + 1})")
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_mapping(path: Path) -> Mapping:
    """Read and validate a mapping file; every problem is a :class:`MappingError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from None
    if len(data) > MAPPING_MAX_BYTES:
        raise MappingError(f"mapping file {path} is larger than {MAPPING_MAX_BYTES} bytes")
    try:
        doc = yaml.load(data, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping file {path} is not valid YAML: {exc}") from None
    except MappingError as exc:
        raise MappingError(f"mapping file {path}: {exc.detail}") from None
    try:
        return parse_mapping(doc)
    except MappingError as exc:
        raise MappingError(f"mapping file {path}: {exc.detail}") from None


def parse_mapping(doc: object) -> Mapping:
    """Validate a parsed mapping document (see the module docstring for its shape)."""
    top = _dict(doc, "the mapping")
    unknown = sorted(set(top) - TOP_LEVEL)
    if unknown:
        raise MappingError(
            f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(TOP_LEVEL))}"
        )
    if top.get("version", 1) != 1:
        raise MappingError("version must be 1")
    entity_type = top.get("entity_type")
    if entity_type is not None:
        _text(entity_type, "entity_type")
    source_id = _text(top["source_id"], "source_id") if "source_id" in top else None
    rename = {
        _text(k, "rename key"): _target(v, f"rename.{k}")
        for k, v in _dict(top.get("rename", {}), "rename").items()
    }
    splits = tuple(_split_rule(r, i) for i, r in enumerate(_list(top.get("split", []), "split")))
    joins = tuple(_join_rule(r, i) for i, r in enumerate(_list(top.get("join", []), "join")))
    lists = {
        _target(k, "lists key"): _text(v, f"lists.{k}")
        for k, v in _dict(top.get("lists", {}), "lists").items()
    }
    code_lists: dict[str, str | dict[str, str]] = {}
    for k, v in _dict(top.get("code_lists", {}), "code_lists").items():
        if v == "country":
            code_lists[_target(k, "code_lists key")] = "country"
        elif isinstance(v, dict):
            table = {
                _text(a, f"code_lists.{k} key"): _text(b, f"code_lists.{k}.{a}")
                for a, b in v.items()
            }
            code_lists[_target(k, "code_lists key")] = table
        else:
            raise MappingError(f"code_lists.{k} must be 'country' or a table of codes")
    date_format = {
        _target(k, "date_format key"): _patterns(v, f"date_format.{k}")
        for k, v in _dict(top.get("date_format", {}), "date_format").items()
    }
    constants = {
        _target(k, "constants key"): _constant(v, f"constants.{k}")
        for k, v in _dict(top.get("constants", {}), "constants").items()
    }
    ignore = tuple(_text(v, "ignore item") for v in _list(top.get("ignore", []), "ignore"))
    return Mapping(
        entity_type,
        source_id,
        rename,
        splits,
        joins,
        lists,
        code_lists,
        date_format,
        constants,
        ignore,
    )


def _dict(value: object, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise MappingError(f"{where} must be a mapping of keys to values")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MappingError(f"{where} must be a list")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MappingError(f"{where} must be a non-empty string")
    return value


def _target(value: object, where: str) -> str:
    text = _text(value, where)
    if not _TARGET.fullmatch(text):
        raise MappingError(f"{where} must be a dotted schema field path such as name.surname")
    return text


def _patterns(value: object, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else _list(value, where)
    if not items:
        raise MappingError(f"{where} needs at least one pattern")
    return tuple(_text(p, where) for p in items)


def _constant(value: object, where: str) -> Any:
    if isinstance(value, str | int | float | bool) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        return value
    raise MappingError(
        f"{where} must be a string, number, boolean or list of strings (quote dates)"
    )


def _keys(rule: dict[Any, Any], allowed: set[str], where: str) -> None:
    extra = sorted(str(k) for k in set(rule) - allowed)
    if extra:
        raise MappingError(
            f"{where}: unknown key {extra[0]!r}; known keys: {', '.join(sorted(allowed))}"
        )


def _split_rule(raw: object, index: int) -> SplitRule:
    where = f"split[{index}]"
    rule = _dict(raw, where)
    _keys(rule, {"field", "into", "separator", "at", "single"}, where)
    into = tuple(_target(t, f"{where}.into") for t in _list(rule.get("into"), f"{where}.into"))
    if len(into) != 2:
        raise MappingError(f"{where}.into must name exactly two fields")
    at = rule.get("at", "first")
    if at not in ("first", "last"):
        raise MappingError(f"{where}.at must be first or last")
    surname = [t for t in into if t.endswith("surname")]
    single = (
        _target(rule["single"], f"{where}.single") if "single" in rule else (surname or into)[0]
    )
    if single not in into:
        raise MappingError(f"{where}.single must be one of the into fields")
    separator = _text(rule["separator"], f"{where}.separator") if "separator" in rule else None
    return SplitRule(_text(rule.get("field"), f"{where}.field"), into, separator, at, single)


def _join_rule(raw: object, index: int) -> JoinRule:
    where = f"join[{index}]"
    rule = _dict(raw, where)
    _keys(rule, {"fields", "into", "separator"}, where)
    fields = tuple(
        _text(f, f"{where}.fields") for f in _list(rule.get("fields"), f"{where}.fields")
    )
    if len(fields) < 2:
        raise MappingError(f"{where}.fields must name at least two fields")
    separator = rule.get("separator", " ")
    if not isinstance(separator, str):
        raise MappingError(f"{where}.separator must be a string")
    return JoinRule(fields, _target(rule.get("into"), f"{where}.into"), separator)
