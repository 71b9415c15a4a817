"""The policy bundle: Rego modules, disclosure agreements and the taxonomy, loaded and checked.

A bundle is everything a policy decision depends on, read once from ``policies/``:

- ``policies/**/*.rego`` except ``*_test.rego``: the Rego modules (entry point
  ``data.ibex.decision``);
- ``policies/agreements/*.yaml``: one disclosure agreement per file, validated against
  ``schemas/policy/agreement.schema.json`` and then against the rules a schema cannot express;
- ``policies/taxonomy.yaml``: purposes, legal bases, handling codes, default minimum criteria.

Loading builds the data document every engine receives under ``data.ibex_data``, including an
index by (provider, recipient) so that a decision reads only the agreements between the two
members it is about, and the bundle digest recorded with every decision. Anything wrong is
refused at load time with the file and JSON pointer, so a broken agreement can never reach a
decision.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycountry
import yaml

from ibex.canonical import digest
from ibex.errors import ConfigError, FieldError, SchemaValidationError
from ibex.schemas import SchemaRegistry, registry

ENTRYPOINT = "data.ibex.decision"
DATA_ROOT = "ibex_data"
BUNDLE_FORMAT = "ibex-policy-bundle/1"
MAX_FILE_BYTES = 1 << 20
AGREEMENTS_DIR = "agreements"
TAXONOMY_FILE = "taxonomy.yaml"
AGREEMENT_SCHEMA = "policy/agreement"
HANDLING_CODES = (
    "H0",
    "H1",
    "H2",
    "H3",
    "TLP:CLEAR",
    "TLP:GREEN",
    "TLP:AMBER",
    "TLP:AMBER+STRICT",
    "TLP:RED",
)
# Agreement keys the decision never reads; left out of the data document to keep it small.
_NOT_FOR_DECISIONS = frozenset({"notes"})


# --- YAML without surprises ------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """YAML 1.1 minus its traps for legal texts: only ``true``/``false`` are booleans (Norway's
    ``NO`` stays a string), dates stay strings (the schema wants ``YYYY-MM-DD`` text), and a key
    written twice is an error instead of silently keeping the last value."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|false)$"),
    list("tf"),
)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _read(path: Path, rel: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"policy file {rel} is {size} bytes; the limit is {MAX_FILE_BYTES}")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"policy file {rel} cannot be read: {exc.strerror}") from None


def _yaml(data: bytes, rel: str) -> Any:
    try:
        return yaml.load(data.decode("utf-8"), Loader=_StrictLoader)  # noqa: S506 - safe subclass
    except UnicodeDecodeError:
        raise ConfigError(f"policy file {rel} is not UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"policy file {rel} is not valid YAML{where}: {problem}") from None


def _refuse(rel: str, errors: list[FieldError]) -> SchemaValidationError:
    noun = "error" if len(errors) == 1 else "errors"
    return SchemaValidationError(f"policy file {rel}: {len(errors)} {noun}", errors=errors)


# --- the taxonomy ----------------------------------------------------------------------------

_TAXONOMY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "purposes", "legal_bases", "handling", "minimum_criteria"],
    "properties": {
        "version": {"const": 1},
        "purposes": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]{2,63}$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["label", "description"],
                "properties": {
                    "label": {"type": "string", "minLength": 1, "maxLength": 80},
                    "description": {"type": "string", "minLength": 1, "maxLength": 1000},
                },
            },
        },
        "legal_bases": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[a-z][a-z0-9_.-]{1,79}$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["label", "citation", "purposes"],
                "properties": {
                    "label": {"type": "string", "minLength": 1, "maxLength": 200},
                    "citation": {"type": "string", "minLength": 1, "maxLength": 500},
                    "url": {"type": "string", "pattern": "^https?://"},
                    "purposes": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"type": "string"},
                    },
                },
            },
        },
        "handling": {
            "type": "object",
            "propertyNames": {"enum": list(HANDLING_CODES)},
            "required": list(HANDLING_CODES),
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["description", "strictness"],
                "properties": {
                    "description": {"type": "string", "minLength": 1, "maxLength": 200},
                    "strictness": {"type": "integer", "minimum": 0, "maximum": 9},
                },
            },
        },
        "minimum_criteria": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
                },
            },
        },
    },
}


def _check_taxonomy(doc: Any, rel: str, schemas: SchemaRegistry) -> dict[str, Any]:
    from jsonschema import Draft202012Validator

    errors = [
        FieldError("".join(f"/{p}" for p in e.absolute_path), e.message)
        for e in Draft202012Validator(_TAXONOMY_SCHEMA).iter_errors(doc)
    ]
    if errors:
        raise _refuse(rel, sorted(errors, key=lambda e: e.pointer))
    entity_types = set(schemas.entity_types())
    for lb_id, lb in doc["legal_bases"].items():
        for i, purpose in enumerate(lb["purposes"]):
            if purpose not in doc["purposes"]:
                errors.append(
                    FieldError(f"/legal_bases/{lb_id}/purposes/{i}", f"unknown purpose {purpose!r}")
                )
    for entity in sorted(entity_types - set(doc["minimum_criteria"])):
        errors.append(
            FieldError(f"/minimum_criteria/{entity}", "every entity type needs minimum criteria")
        )
    for entity, sets in doc["minimum_criteria"].items():
        if entity not in entity_types:
            errors.append(FieldError(f"/minimum_criteria/{entity}", "unknown entity type"))
            continue
        errors.extend(_unknown_fields(schemas, entity, sets, f"/minimum_criteria/{entity}"))
    if errors:
        raise _refuse(rel, errors)
    assert isinstance(doc, dict)
    return doc


def _unknown_fields(
    schemas: SchemaRegistry, entity: str, sets: list[list[str]], base: str
) -> list[FieldError]:
    fields = set(schemas.fields(entity))
    return [
        FieldError(f"{base}/{i}/{j}", f"{name!r} is not a field of {entity}")
        for i, alternative in enumerate(sets)
        for j, name in enumerate(alternative)
        if name not in fields
    ]


# --- agreements ------------------------------------------------------------------------------


def _check_agreement(
    doc: Any, rel: str, schemas: SchemaRegistry, taxonomy: Mapping[str, Any]
) -> dict[str, Any]:
    """Schema first (every error with its pointer), then what a schema cannot say."""
    try:
        schemas.validate(doc, AGREEMENT_SCHEMA)
    except SchemaValidationError as exc:
        raise _refuse(rel, exc.errors) from None
    assert isinstance(doc, dict)
    errors: list[FieldError] = []
    if doc["valid_until"] < doc["valid_from"]:
        errors.append(FieldError("/valid_until", "is before valid_from"))
    if doc["provider"] in doc["recipients"]:
        i = doc["recipients"].index(doc["provider"])
        errors.append(FieldError(f"/recipients/{i}", "the provider cannot be its own recipient"))
    for i, purpose in enumerate(doc["purposes"]):
        if purpose not in taxonomy["purposes"]:
            errors.append(FieldError(f"/purposes/{i}", f"{purpose!r} is not in the taxonomy"))
    for i, basis in enumerate(doc["legal_bases"]):
        if basis["id"] not in taxonomy["legal_bases"]:
            errors.append(
                FieldError(f"/legal_bases/{i}/id", f"{basis['id']!r} is not in the taxonomy")
            )
    for purpose, per_entity in doc["fields"].items():
        if purpose not in doc["purposes"]:
            errors.append(FieldError(f"/fields/{purpose}", "is not one of the purposes"))
        for entity, names in per_entity.items():
            if entity not in doc["subject_types"]:
                errors.append(
                    FieldError(f"/fields/{purpose}/{entity}", "is not one of the subject_types")
                )
            known = set(schemas.fields(entity))
            errors.extend(
                FieldError(f"/fields/{purpose}/{entity}/{j}", f"{n!r} is not a field of {entity}")
                for j, n in enumerate(names)
                if n not in known
            )
    for entity, sets in doc.get("minimum_criteria", {}).items():
        errors.extend(_unknown_fields(schemas, entity, sets, f"/minimum_criteria/{entity}"))
    follow_up = doc.get("follow_up", {})
    if follow_up.get("requires") and not follow_up.get("allowed"):
        errors.append(FieldError("/follow_up/requires", "is set but follow_up is not allowed"))
    if errors:
        raise _refuse(rel, errors)
    return doc


def _alpha2(code: str) -> str:
    """Agreements may name a country by alpha-3; queries use alpha-2. Normalise to alpha-2 so
    the policy compares like with like (subdivisions and alpha-2 codes are kept as written)."""
    if len(code) == 3 and "-" not in code:
        country = pycountry.countries.get(alpha_3=code)
        if country is not None:
            return str(country.alpha_2)
    return code


SERIOUSNESS_LEVELS = {"none": 0, "minor": 1, "serious": 2, "very_serious": 3}

# --- the sentences of decisions ------------------------------------------------------------
#
# Every sentence a decision can give, in one place for legal review (docs/POLICY.md §4 lists
# them with examples). A {placeholder} is either a fact of the agreement, filled in here when
# the bundle loads (id, title, valid_from, valid_until, jurisdictions, criteria,
# minimum_seriousness, handling_description, retention_days, handling), or a fact of the query,
# filled in by the Rego modules for each decision: those are listed in DYNAMIC, in the order
# the Rego code supplies them, and the loader refuses a sentence whose query facts are not
# exactly these, in this order (so a change of wording cannot put a fact in the wrong place).
# The policy receives each sentence as the list of its fixed pieces between the query facts.

SENTENCES: dict[str, str] = {
    # findings about the query
    "input.invalid": "The decision input is incomplete or inconsistent (the query, requester, "
    "target, provider or time is missing or does not match), so nothing can be disclosed.",
    "provider.inactive": "{target} is not an active member of the federation, so it cannot be "
    "asked.",
    "purpose.unknown": "The purpose {purpose} is not in the federation's taxonomy of purposes, "
    "so no agreement can cover it.",
    "legal_basis.unknown": "The legal basis {legal_basis} is not in the federation's taxonomy of "
    "legal bases.",
    "legal_basis.not_for_purpose": "{basis_citation} does not permit disclosure for "
    "{purpose_label}.",
    "jurisdiction.not_requester": "{requester} does not act in {jurisdiction} according to the "
    "federation document, so it cannot ask on behalf of that jurisdiction.",
    "fields.unknown": "The query names fields that the shared {subject} schema does not define "
    "({fields}), so it is refused as malformed.",
    "agreement.none": "{target} has no disclosure agreement with {requester}, so nothing can be "
    "disclosed.",
    "default.deny": "No agreement allows this query, so it is denied by default.",
    # findings about an agreement
    "agreement.expired": "Agreement {id} expired on {valid_until} and no longer allows any "
    "disclosure.",
    "agreement.not_yet_valid": "Agreement {id} applies only from {valid_from}.",
    "purpose.not_covered": "Agreement {id} does not cover the purpose {purpose_label}.",
    "legal_basis.not_covered": "Agreement {id} does not rest on the legal basis {legal_basis} "
    "that the query invokes.",
    "subject_type.not_covered": "Agreement {id} does not cover {subject} records for "
    "{purpose_label}.",
    "jurisdiction.outside": "Agreement {id} does not allow the data to be used in "
    "{jurisdiction}; it covers {jurisdictions}.",
    "criteria.insufficient": "The query does not identify the {subject} precisely enough for "
    "agreement {id}, which needs at least {criteria}.",
    "case_reference.missing": "Agreement {id} requires the recipient's case reference and the "
    "query has none.",
    "seriousness.too_low": "Agreement {id} requires an offence of at least {minimum_seriousness} "
    "seriousness and the query states {seriousness}.",
    "seriousness.missing": "Agreement {id} requires a follow-up to state the seriousness of the "
    "offence under investigation, and this one does not.",
    "follow_up.not_allowed": "Agreement {id} allows only hit/no-hit answers and no follow-up "
    "request for full data.",
    "follow_up.unconfirmed": "Agreement {id} releases full data on a follow-up only after the "
    "officer confirms that the hit is the subject of the case, and this follow-up is not "
    "confirmed.",
    "handling.unknown": "Agreement {id} names the handling code {handling}, which the "
    "federation does not define, so it cannot be applied.",
    # what an allow says
    "allow.agreement": "Allowed under agreement {id} ({title}): {target} may disclose {subject} "
    "records to {requester} for {purpose_label}.",
    "follow_up.full": "Full data is released on this follow-up to a hit because agreement {id} "
    "allows it and its conditions are met.",
    "mode.downgraded/follow_up": "Only whether a matching record exists (hit/no-hit) is "
    "disclosed, because agreement {id} releases full data only on a follow-up to a hit.",
    "mode.downgraded/hit_no_hit_only": "Only whether a matching record exists (hit/no-hit) is "
    "disclosed, because agreement {id} allows hit/no-hit answers only.",
    "fields.withheld/full/one": "The field {fields} is withheld because agreement {id} does not "
    "allow it for {purpose_label}.",
    "fields.withheld/full/many": "The fields {fields} are withheld because agreement {id} does "
    "not allow them for {purpose_label}.",
    "fields.withheld/hit_no_hit/one": "The field {fields} is withheld because a hit/no-hit "
    "answer discloses only whether a matching record exists.",
    "fields.withheld/hit_no_hit/many": "The fields {fields} are withheld because a hit/no-hit "
    "answer discloses only whether a matching record exists.",
    "handling.applied": "Disclosed data carries handling code {handling} "
    "({handling_description}) and may be kept for at most {retention_days} days.",
}

# The facts of the query each sentence takes, in the order the Rego modules supply them.
DYNAMIC: dict[str, tuple[str, ...]] = {
    "provider.inactive": ("target",),
    "purpose.unknown": ("purpose",),
    "legal_basis.unknown": ("legal_basis",),
    "legal_basis.not_for_purpose": ("basis_citation", "purpose_label"),
    "jurisdiction.not_requester": ("requester", "jurisdiction"),
    "fields.unknown": ("subject", "fields"),
    "agreement.none": ("target", "requester"),
    "purpose.not_covered": ("purpose_label",),
    "legal_basis.not_covered": ("legal_basis",),
    "subject_type.not_covered": ("subject", "purpose_label"),
    "jurisdiction.outside": ("jurisdiction",),
    "seriousness.too_low": ("seriousness",),
    "handling.unknown": ("handling",),
    "allow.agreement": ("target", "subject", "requester", "purpose_label"),
    "fields.withheld/full/one": ("fields", "purpose_label"),
    "fields.withheld/full/many": ("fields", "purpose_label"),
    "fields.withheld/hit_no_hit/one": ("fields",),
    "fields.withheld/hit_no_hit/many": ("fields",),
}

# The sentences about the query as a whole, and those about one agreement.
QUERY_RULES = (
    "input.invalid",
    "provider.inactive",
    "purpose.unknown",
    "legal_basis.unknown",
    "legal_basis.not_for_purpose",
    "jurisdiction.not_requester",
    "fields.unknown",
    "agreement.none",
    "default.deny",
)

# The key of the agreement each finding is about: a reason's clause is "<id>: <key>".
CLAUSE_KEYS: dict[str, str] = {
    "agreement.not_yet_valid": "valid_from",
    "agreement.expired": "valid_until",
    "purpose.not_covered": "purposes",
    "legal_basis.not_covered": "legal_bases",
    "subject_type.not_covered": "fields",
    "jurisdiction.outside": "jurisdictions",
    "criteria.insufficient": "minimum_criteria",
    "case_reference.missing": "requires_case_reference",
    "seriousness.missing": "follow_up",
    "seriousness.too_low": "minimum_seriousness",
    "follow_up.not_allowed": "follow_up",
    "follow_up.unconfirmed": "follow_up",
    "handling.unknown": "handling",
    "allow.agreement": "legal_bases",
    "follow_up.full": "follow_up",
    "mode.downgraded": "mode",
    "fields.withheld": "fields",
    "handling.applied": "handling",
}


def names(items: list[str]) -> str:
    """A list of names for a sentence: "a", "a and b", "a, b and c" (as lib.names in Rego)."""
    if len(items) == 1:
        return items[0]
    return " and ".join([", ".join(items[:-1]), items[-1]])


def sentence_parts(key: str, facts: Mapping[str, object]) -> list[str]:
    """The sentence ``key`` with the agreement's ``facts`` filled in, cut at each fact of the
    query (``DYNAMIC[key]``): the pieces the policy joins around those facts."""
    parts = [""]
    found: list[str] = []
    for literal, name, _spec, _conv in string.Formatter().parse(SENTENCES[key]):
        parts[-1] += literal
        if name is None:
            continue
        if name in DYNAMIC.get(key, ()):
            found.append(name)
            parts.append("")
        elif name in facts:
            parts[-1] += str(facts[name])
        else:
            raise ConfigError(f"the sentence for {key} names {{{name}}}, which is not known")
    if tuple(found) != DYNAMIC.get(key, ()):
        raise ConfigError(
            f"the sentence for {key} must take {', '.join(DYNAMIC.get(key, ()))} in that order"
        )
    return parts


def _agreement_sentences(
    doc: Mapping[str, Any], taxonomy: Mapping[str, Any], criteria: Mapping[str, list[list[str]]]
) -> dict[str, Any]:
    handling = taxonomy["handling"].get(doc["handling"], {})
    facts = {
        "id": doc["id"],
        "title": doc["title"],
        "valid_from": doc["valid_from"],
        "valid_until": doc["valid_until"],
        "jurisdictions": names(list(doc["jurisdictions"])),
        "minimum_seriousness": doc.get("minimum_seriousness", "none"),
        "handling_description": handling.get("description", ""),
        "retention_days": doc["retention_days"],
        "handling": doc["handling"],
    }
    keys = [k for k in SENTENCES if k not in QUERY_RULES and k != "criteria.insufficient"]
    say: dict[str, Any] = {key: sentence_parts(key, facts) for key in keys}
    say["criteria.insufficient"] = {
        subject: sentence_parts(
            "criteria.insufficient",
            {**facts, "subject": subject, "criteria": "; or ".join(names(s) for s in sets)},
        )
        for subject, sets in criteria.items()
    }
    return say


def compile_agreement(doc: Mapping[str, Any], taxonomy: Mapping[str, Any]) -> dict[str, Any]:
    """The agreement as the policy reads it: every key as written (except ``notes``), plus
    derived keys that turn each check into one lookup. The derivations apply the schema's
    defaults (a case reference is required unless the agreement says otherwise; the minimum
    seriousness is none; no follow-up) and the taxonomy's default minimum criteria, so that
    the Rego never has to guess at a missing key. ``say`` holds the agreement's sentences,
    ``clause`` the clause of each finding and ``choice`` the part of the choice key that does
    not depend on the query (decision.rego)."""
    out = {k: v for k, v in doc.items() if k not in _NOT_FOR_DECISIONS}
    subject_types = set(doc["subject_types"])
    jurisdictions = sorted({_alpha2(j) for j in doc["jurisdictions"]})
    requires = set(doc.get("follow_up", {}).get("requires", []))
    criteria = {
        entity: doc.get("minimum_criteria", {}).get(entity) or taxonomy["minimum_criteria"][entity]
        for entity in sorted(subject_types)
    }
    # Every purpose of the agreement has an entry, empty when it lists no fields for it.
    allowed = {
        purpose: {
            entity: dict.fromkeys(listed, True)
            for entity, listed in doc["fields"].get(purpose, {}).items()
            if entity in subject_types
        }
        for purpose in doc["purposes"]
    }
    strictness = taxonomy["handling"].get(doc["handling"], {}).get("strictness", 0)
    say = _agreement_sentences({**doc, "jurisdictions": jurisdictions}, taxonomy, criteria)
    clause = {rule: f"{doc['id']}: {key}" for rule, key in CLAUSE_KEYS.items()}
    # The reasons of an allow that depend only on the agreement and the legal basis invoked.
    ready = {
        lb["id"]: {
            key: {
                "rule": key.split("/")[0],
                "text": say[key][0],
                "citation": lb["citation"],
                "clause": clause[key.split("/")[0]],
            }
            for key in (
                "follow_up.full",
                "mode.downgraded/follow_up",
                "mode.downgraded/hit_no_hit_only",
                "handling.applied",
            )
        }
        for lb in doc["legal_bases"]
    }
    out.update(
        jurisdictions=jurisdictions,
        jurisdiction_set=dict.fromkeys(jurisdictions, True),
        purpose_set=dict.fromkeys(doc["purposes"], True),
        citation=doc["legal_bases"][0]["citation"],
        citation_by_basis={lb["id"]: lb["citation"] for lb in doc["legal_bases"]},
        allowed=allowed,
        criteria=criteria,
        case_reference_required=doc.get("requires_case_reference", True),
        minimum_seriousness=doc.get("minimum_seriousness", "none"),
        seriousness_level=SERIOUSNESS_LEVELS[doc.get("minimum_seriousness", "none")],
        follow_up_terms={
            "allowed": bool(doc.get("follow_up", {}).get("allowed", False)),
            "case_reference": "case_reference" in requires,
            "seriousness": "seriousness" in requires,
            "officer_confirmation": "officer_confirmation" in requires,
        },
        say=say,
        clause=clause,
        ready=ready,
        # Prefer the stricter handling code, then the shorter retention, then the lowest id.
        choice=f"{9 - strictness}|{doc['retention_days']:05d}|{doc['id']}",
    )
    return out


# --- the bundle ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    """Everything a decision depends on, checked, with its digest.

    ``modules`` and ``tests`` map a path relative to the policies directory
    (``ibex/agreement.rego``) to its source; ``data`` is the document engines receive
    (``{"ibex_data": {...}}``) and ``data_json`` the same as JSON text, serialised once because
    every engine thread needs it.
    """

    root: Path
    digest: str
    modules: Mapping[str, str]
    tests: Mapping[str, str]
    agreements: Mapping[str, Mapping[str, Any]]
    agreement_files: Mapping[str, str]
    taxonomy: Mapping[str, Any]
    data: Mapping[str, Any] = field(repr=False)
    data_json: str = field(repr=False)
    reads_time_of_day: bool = True

    @classmethod
    def load(cls, policies_dir: Path, *, schemas: SchemaRegistry | None = None) -> PolicyBundle:
        """Read and check every file under ``policies_dir``; raise
        :class:`~ibex.errors.ConfigError` for an unreadable or unparsable file and
        :class:`~ibex.errors.SchemaValidationError` (naming the file, with pointers) for an
        agreement or taxonomy that is not valid."""
        root = Path(policies_dir)
        if not root.is_dir():
            raise ConfigError(f"policies directory {root} does not exist")
        reg = schemas or registry()
        raw: dict[str, bytes] = {}
        modules: dict[str, str] = {}
        tests: dict[str, str] = {}
        for path in sorted(root.rglob("*.rego")):
            rel = path.relative_to(root).as_posix()
            content = _read(path, rel)
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"policy file {rel} is not UTF-8") from None
            if rel.endswith("_test.rego"):
                tests[rel] = text
            else:
                modules[rel] = text
                raw[rel] = content
        if not modules:
            raise ConfigError(f"no Rego modules under {root}")
        _compile_check(modules)

        taxonomy_path = root / TAXONOMY_FILE
        if not taxonomy_path.is_file():
            raise ConfigError(f"policies directory {root} has no {TAXONOMY_FILE}")
        raw[TAXONOMY_FILE] = _read(taxonomy_path, TAXONOMY_FILE)
        taxonomy = _check_taxonomy(_yaml(raw[TAXONOMY_FILE], TAXONOMY_FILE), TAXONOMY_FILE, reg)

        agreements: dict[str, dict[str, Any]] = {}
        files: dict[str, str] = {}
        agreements_dir = root / AGREEMENTS_DIR
        paths = sorted([*agreements_dir.glob("*.yaml"), *agreements_dir.glob("*.yml")])
        for path in paths:
            rel = path.relative_to(root).as_posix()
            raw[rel] = _read(path, rel)
            doc = _check_agreement(_yaml(raw[rel], rel), rel, reg, taxonomy)
            if doc["id"] in agreements:
                raise ConfigError(
                    f"policy files {files[doc['id']]} and {rel} both define agreement {doc['id']}"
                )
            agreements[doc["id"]] = doc
            files[doc["id"]] = rel

        entities = {
            name: dict.fromkeys(sorted({*reg.fields(name), *reg.annotations(name)}), True)
            for name in reg.entity_types()
        }
        data = {DATA_ROOT: build_data(agreements, taxonomy, entities)}
        manifest = {
            "format": BUNDLE_FORMAT,
            "files": [
                {"path": rel, "sha256": hashlib.sha256(raw[rel]).hexdigest()} for rel in sorted(raw)
            ],
            # The entity field lists come from the shared schemas, not from policies/, but they
            # decide fields.unknown: a schema change is a policy change and must show in the
            # digest.
            "entities": digest(entities),
        }
        return cls(
            root=root,
            digest=digest(manifest),
            modules=modules,
            tests=tests,
            agreements=agreements,
            agreement_files=files,
            taxonomy=taxonomy,
            data=data,
            data_json=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
            reads_time_of_day=any(_reads_time_of_day(text) for text in modules.values()),
        )


def build_data(
    agreements: Mapping[str, Mapping[str, Any]],
    taxonomy: Mapping[str, Any],
    entities: Mapping[str, Mapping[str, bool]],
) -> dict[str, Any]:
    """The document under ``data.ibex_data``: agreements by id, the (provider, recipient) index
    (ids sorted), the taxonomy and every entity's field paths; and, so that a decision is a few
    lookups, ``pairs`` (per provider and recipient: the agreement ids in the order their
    reasons are listed, and those that cover each purpose and subject type) and ``say`` (the
    sentences about the query, see SENTENCES)."""
    compiled = {k: compile_agreement(v, taxonomy) for k, v in sorted(agreements.items())}
    index: dict[str, dict[str, list[str]]] = {}
    for agreement_id in sorted(agreements):
        agreement = agreements[agreement_id]
        for recipient in agreement["recipients"]:
            index.setdefault(agreement["provider"], {}).setdefault(recipient, []).append(
                agreement_id
            )
    pairs: dict[str, dict[str, Any]] = {}
    for provider, recipients in index.items():
        for recipient, ids in recipients.items():
            cover: dict[str, dict[str, list[str]]] = {}
            for agreement_id in ids:
                for purpose, per_entity in compiled[agreement_id]["allowed"].items():
                    for entity in per_entity:
                        cover.setdefault(purpose, {}).setdefault(entity, []).append(agreement_id)
            # A deny lists each agreement's reasons in the order of "<id>|", the order the
            # reasons had when they were sorted by a key starting with the id and a "|".
            ordered = sorted(ids, key=lambda i: f"{i}|")
            pairs.setdefault(provider, {})[recipient] = {"ids": ordered, "cover": cover}
    return {
        "agreements": compiled,
        "index": index,
        "pairs": pairs,
        "taxonomy": {
            "purposes": taxonomy["purposes"],
            "legal_bases": {
                k: {**v, "purpose_set": dict.fromkeys(v["purposes"], True)}
                for k, v in taxonomy["legal_bases"].items()
            },
            "handling": taxonomy["handling"],
            "minimum_criteria": taxonomy["minimum_criteria"],
        },
        "entities": {k: dict(v) for k, v in entities.items()},
        "say": {key: sentence_parts(key, {}) for key in QUERY_RULES},
    }


# The only ways the shipped modules read the clock: its date, and its shape. Anything else
# (another use of input.now, time.now_ns) may make a decision depend on the time of day, which
# switches the engines' decision cache off.
_COMMENT = re.compile(r"(?m)^\s*#.*$")
_DATE_ONLY_USES = re.compile(
    r"substring\(input\.now, 0, 10\)|is_string\(input\.now\)|count\(input\.now\) >= 10"
)


def _reads_time_of_day(text: str) -> bool:
    stripped = _DATE_ONLY_USES.sub("", _COMMENT.sub("", text))
    return "input.now" in stripped or 'input["now"]' in stripped or "time.now_ns" in stripped


def _compile_check(modules: Mapping[str, str]) -> None:
    """Parse every module once at load time so that a syntax error names its file here, not as
    an engine error on the first decision."""
    import regorus

    engine = regorus.Engine()
    for rel, text in modules.items():
        try:
            engine.add_policy(rel, text)
        except Exception as exc:  # regorus raises RuntimeError with the parser's message
            raise ConfigError(f"policy file {rel} is not valid Rego: {exc}") from None
