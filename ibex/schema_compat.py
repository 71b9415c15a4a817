"""Is a schema change compatible? ``ibex schema check OLD NEW`` (docs/SCHEMA-GOVERNANCE.md).

The rule (DESIGN.md section 6, PROTOCOL.md section 12): a **minor** version may only add
optional properties; anything else a receiver of the old version could trip over is **major**.
Receivers refuse unknown fields of their own version, so widening is breaking too: a new enum
value, a longer ``maxLength`` or a dropped ``pattern`` lets a provider on the new version send
what a receiver on the old one refuses. Annotation changes (``description``, ``title``,
``examples``, ``x-ibex-*``) change nothing on the wire and are reported as ``none``.

Every reason carries the JSON pointer of the place in the schema it is about. The ``$id`` version
bump is checked against the classification.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibex.errors import BadInput
from ibex.jsonio import loads_strict
from ibex.schemas import _ID_RE

LEVELS = ("none", "minor", "major")
ANNOTATIONS = frozenset(
    {"title", "description", "examples", "default", "$comment", "deprecated", "$schema"}
)
# Keywords whose larger value allows more (raising one widens, lowering it narrows).
UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")
LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")
SUBSCHEMA_MAPS = ("properties", "$defs", "patternProperties", "dependentSchemas")
SUBSCHEMAS = (
    "items",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
)
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


@dataclass(frozen=True, slots=True)
class Reason:
    level: str  # none | minor | major
    schema: str  # category/name
    pointer: str  # JSON pointer into the schema
    message: str

    def to_json(self) -> dict[str, str]:
        return {
            "level": self.level,
            "schema": self.schema,
            "pointer": self.pointer or "/",
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class SchemaChange:
    schema: str
    old_version: str | None
    new_version: str | None
    level: str
    reasons: tuple[Reason, ...]
    version_ok: bool
    version_note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "level": self.level,
            "version_ok": self.version_ok,
            "version_note": self.version_note,
            "reasons": [r.to_json() for r in self.reasons],
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    changes: tuple[SchemaChange, ...]

    @property
    def level(self) -> str:
        return max((c.level for c in self.changes), key=LEVELS.index, default="none")

    @property
    def breaking(self) -> bool:
        return self.level == "major"

    @property
    def versions_ok(self) -> bool:
        return all(c.version_ok for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "breaking": self.breaking,
            "versions_ok": self.versions_ok,
            "schemas": [c.to_json() for c in self.changes],
        }

    def to_text(self) -> str:
        lines: list[str] = []
        for c in self.changes:
            label = {"major": "BREAKING (major)", "minor": "compatible (minor)"}.get(
                c.level, "no wire change"
            )
            lines.append(f"{c.schema} {c.old_version or '-'} -> {c.new_version or '-'}: {label}")
            lines.extend(
                f"  {r.level:<5} {r.pointer or '/'}: {r.message}"
                for r in c.reasons
                if r.level != "none" or len(c.reasons) < 20
            )
            if not c.version_ok:
                lines.append(f"  VERSION {c.version_note}")
        verdict = "breaking" if self.breaking else "compatible"
        if not self.versions_ok:
            verdict += "; the $id version bump does not match"
        lines.append(f"verdict: {verdict}")
        return "\n".join(lines)


# --- loading ---------------------------------------------------------------------------------


def load_schemas(path: Path) -> dict[str, tuple[tuple[int, int], dict[str, Any]]]:
    """``category/name`` -> (version, schema) for a file or every ``*.schema.json`` below a
    directory; where a directory holds several versions of one schema, the highest counts."""
    files = sorted(path.rglob("*.schema.json")) if path.is_dir() else [path]
    if not files:
        raise BadInput(f"no *.schema.json files in {path}")
    out: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
    for f in files:
        try:
            doc = loads_strict(f.read_bytes(), what=f"schema file {f}")
        except OSError as exc:
            raise BadInput(f"cannot read {f}: {exc.strerror}") from None
        sid = doc.get("$id") if isinstance(doc, dict) else None
        match = _ID_RE.fullmatch(sid) if isinstance(sid, str) else None
        if match is None or not isinstance(doc, dict):
            raise BadInput(f"{f} has no versioned $id (…/<category>/<name>/<M>.<m>)")
        category, name, major, minor = match.groups()
        key, version = f"{category}/{name}", (int(major), int(minor))
        if key not in out or out[key][0] < version:
            out[key] = (version, doc)
    return out


def check_paths(old: Path, new: Path) -> CheckResult:
    """Compare OLD and NEW (files or directories), schema by ``$id`` name."""
    before, after = load_schemas(old), load_schemas(new)
    if old.is_file() and new.is_file() and set(before) != set(after):
        raise BadInput(f"{old} is {', '.join(before)} but {new} is {', '.join(after)}")
    changes = [
        compare(key, before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
    ]
    return CheckResult(tuple(changes))


def compare(
    key: str,
    old: tuple[tuple[int, int], dict[str, Any]] | None,
    new: tuple[tuple[int, int], dict[str, Any]] | None,
) -> SchemaChange:
    if old is None:
        assert new is not None
        reason = Reason("minor", key, "", "a new schema")
        return _change(key, None, new[0], (reason,))
    if new is None:
        reason = Reason("major", key, "", "the schema was removed")
        return _change(key, old[0], None, (reason,))
    reasons = tuple(_node(key, old[1], new[1], ""))
    return _change(key, old[0], new[0], reasons)


def _change(
    key: str,
    old: tuple[int, int] | None,
    new: tuple[int, int] | None,
    reasons: tuple[Reason, ...],
) -> SchemaChange:
    level = max((r.level for r in reasons), key=LEVELS.index, default="none")
    ok, note = _version_ok(level, old, new)
    return SchemaChange(key, _show(old), _show(new), level, reasons, ok, note)


def _show(version: tuple[int, int] | None) -> str | None:
    return None if version is None else f"{version[0]}.{version[1]}"


def _version_ok(
    level: str, old: tuple[int, int] | None, new: tuple[int, int] | None
) -> tuple[bool, str]:
    if old is None or new is None:
        return True, ""
    if level == "major":
        if new[0] > old[0]:
            return True, ""
        return False, f"a breaking change needs a new major version (at least {old[0] + 1}.0)"
    if level == "minor":
        if new[0] == old[0] and new[1] > old[1]:
            return True, ""
        if new[0] > old[0]:
            return True, "a major bump for a compatible change (allowed, not needed)"
        return False, f"a compatible change needs a new minor version ({old[0]}.{old[1] + 1})"
    if new < old:
        return False, "the version went down"
    return True, ""


# --- comparing schema nodes ------------------------------------------------------------------


def _esc(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _types(node: Mapping[str, Any]) -> set[str] | None:
    t = node.get("type")
    if t is None:
        return None
    types = {t} if isinstance(t, str) else set(t)
    if "number" in types:
        types.add("integer")
    return types


def _node(key: str, old: Any, new: Any, ptr: str) -> Iterator[Reason]:
    if isinstance(old, bool) or isinstance(new, bool) or not isinstance(old, dict):
        if old != new:
            yield Reason("major", key, ptr, f"the subschema changed from {old!r} to {new!r}")
        return
    if not isinstance(new, dict):
        yield Reason("major", key, ptr, "the subschema changed shape")
        return
    yield from _refs(key, old, new, ptr)
    yield from _type_enum(key, old, new, ptr)
    yield from _bounds(key, old, new, ptr)
    yield from _objects(key, old, new, ptr)
    for kw in SUBSCHEMAS:
        if kw in old and kw in new:
            yield from _node(key, old[kw], new[kw], f"{ptr}/{kw}")
        elif kw in old or kw in new:
            what = "added" if kw in new else "removed"
            yield Reason("major", key, f"{ptr}/{kw}", f"{kw} was {what}")
    for kw in SUBSCHEMA_LISTS:
        a, b = old.get(kw), new.get(kw)
        if a is None and b is None:
            continue
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            yield Reason("major", key, f"{ptr}/{kw}", f"{kw} changed")
            continue
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _node(key, x, y, f"{ptr}/{kw}/{i}")
    handled = {
        "$ref",
        "type",
        "enum",
        "const",
        "pattern",
        "format",
        "uniqueItems",
        "required",
        "additionalProperties",
        "$id",
        "x-ibex-version",
        *UPPER_BOUNDS,
        *LOWER_BOUNDS,
        *SUBSCHEMA_MAPS,
        *SUBSCHEMAS,
        *SUBSCHEMA_LISTS,
    }
    for kw in sorted((set(old) | set(new)) - handled):
        if old.get(kw) == new.get(kw):
            continue
        where = f"{ptr}/{_esc(kw)}"
        if kw in ANNOTATIONS or kw.startswith("x-"):
            yield Reason("none", key, where, f"annotation {kw} changed")
        else:
            yield Reason("major", key, where, f"{kw} changed")


def _refs(key: str, old: Mapping[str, Any], new: Mapping[str, Any], ptr: str) -> Iterator[Reason]:
    a, b = old.get("$ref"), new.get("$ref")
    if a == b:
        return
    where = f"{ptr}/$ref"
    if a is None or b is None:
        yield Reason("major", key, where, f"$ref {'added' if b else 'removed'}")
        return
    ma, mb = _ID_RE.match(str(a)), _ID_RE.match(str(b))
    same_target = (
        ma is not None
        and mb is not None
        and ma.groups()[:3] == mb.groups()[:3]
        and str(a)[ma.end() :] == str(b)[mb.end() :]
    )
    if same_target:
        yield Reason(
            "minor", key, where, f"now refers to {b} (a newer minor version of the same schema)"
        )
    else:
        yield Reason("major", key, where, f"$ref target changed from {a} to {b}")


def _type_enum(
    key: str, old: Mapping[str, Any], new: Mapping[str, Any], ptr: str
) -> Iterator[Reason]:
    ta, tb = _types(old), _types(new)
    if ta != tb:
        if tb is not None and (ta is None or tb < ta):
            yield Reason("major", key, f"{ptr}/type", f"type narrowed to {sorted(tb)}")
        elif ta is not None and (tb is None or ta < tb):
            yield Reason("major", key, f"{ptr}/type", "type widened (old receivers refuse it)")
        else:
            yield Reason("major", key, f"{ptr}/type", "type changed")
    for kw in ("enum", "const"):
        a, b = old.get(kw), new.get(kw)
        if a == b:
            continue
        where = f"{ptr}/{kw}"
        if kw == "enum" and isinstance(a, list) and isinstance(b, list):
            gone = [v for v in a if v not in b]
            added = [v for v in b if v not in a]
            if gone:
                yield Reason("major", key, where, f"enum narrowed: {_vals(gone)} removed")
            if added:
                yield Reason(
                    "major",
                    key,
                    where,
                    f"enum widened: {_vals(added)} added (old receivers refuse the new values)",
                )
        elif a is None:
            yield Reason("major", key, where, f"{kw} added (narrows the values allowed)")
        elif b is None:
            yield Reason("major", key, where, f"{kw} removed (widens the values allowed)")
        else:
            yield Reason("major", key, where, f"{kw} changed")
    for kw in ("pattern", "format"):
        a, b = old.get(kw), new.get(kw)
        if a == b:
            continue
        where = f"{ptr}/{kw}"
        if a is None:
            yield Reason("major", key, where, f"{kw} {b!r} added (narrows)")
        elif b is None:
            yield Reason("major", key, where, f"{kw} {a!r} removed (widens)")
        else:
            yield Reason("major", key, where, f"{kw} changed from {a!r} to {b!r}")
    a, b = bool(old.get("uniqueItems")), bool(new.get("uniqueItems"))
    if a != b:
        what = "added (narrows)" if b else "removed (widens)"
        yield Reason("major", key, f"{ptr}/uniqueItems", f"uniqueItems {what}")


def _vals(values: list[Any]) -> str:
    return ", ".join(repr(v) for v in values[:10]) + (" …" if len(values) > 10 else "")


def _bounds(key: str, old: Mapping[str, Any], new: Mapping[str, Any], ptr: str) -> Iterator[Reason]:
    for kw in (*UPPER_BOUNDS, *LOWER_BOUNDS):
        a, b = old.get(kw), new.get(kw)
        if a == b:
            continue
        upper = kw in UPPER_BOUNDS
        if a is None:
            narrowed = True
        elif b is None:
            narrowed = False
        else:
            narrowed = (b < a) if upper else (b > a)
        what = "narrowed" if narrowed else "widened"
        yield Reason("major", key, f"{ptr}/{kw}", f"{kw} {what}: {a} -> {b}")


def _objects(
    key: str, old: Mapping[str, Any], new: Mapping[str, Any], ptr: str
) -> Iterator[Reason]:
    req_old, req_new = set(old.get("required") or ()), set(new.get("required") or ())
    props_old: Mapping[str, Any] = old.get("properties") or {}
    props_new: Mapping[str, Any] = new.get("properties") or {}
    for name in sorted(set(props_old) - set(props_new)):
        yield Reason("major", key, f"{ptr}/properties/{_esc(name)}", f"property {name} removed")
    for name in sorted(set(props_new) - set(props_old)):
        where = f"{ptr}/properties/{_esc(name)}"
        if name in req_new:
            yield Reason("major", key, where, f"new required property {name}")
        else:
            yield Reason("minor", key, where, f"optional property {name} added")
    for name in sorted(set(props_old) & set(props_new)):
        yield from _node(key, props_old[name], props_new[name], f"{ptr}/properties/{_esc(name)}")
    for name in sorted((req_new - req_old) & set(props_old)):
        yield Reason("major", key, f"{ptr}/required", f"{name} became required")
    for name in sorted(req_old - req_new):
        yield Reason("major", key, f"{ptr}/required", f"{name} is no longer required")
    for kw in ("$defs", "patternProperties", "dependentSchemas"):
        a: Mapping[str, Any] = old.get(kw) or {}
        b: Mapping[str, Any] = new.get(kw) or {}
        for name in sorted(set(a) - set(b)):
            yield Reason("major", key, f"{ptr}/{kw}/{_esc(name)}", f"{kw} entry {name} removed")
        for name in sorted(set(b) - set(a)):
            yield Reason("none", key, f"{ptr}/{kw}/{_esc(name)}", f"{kw} entry {name} added")
        for name in sorted(set(a) & set(b)):
            yield from _node(key, a[name], b[name], f"{ptr}/{kw}/{_esc(name)}")
    ap_old, ap_new = old.get("additionalProperties", True), new.get("additionalProperties", True)
    where = f"{ptr}/additionalProperties"
    if ap_old is True and ap_new is False:
        yield Reason("major", key, where, "additionalProperties true -> false (narrows)")
    elif ap_old is False and ap_new is True:
        yield Reason("major", key, where, "additionalProperties false -> true (widens)")
    elif ap_old != ap_new:
        yield from _node(key, ap_old, ap_new, where)
