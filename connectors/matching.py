"""Matching criteria against the record store, with explicit, explainable rules.

Every hit carries a score in [0, 1] and the stable ids of the rules that produced it, so an
officer (and an oversight body) can see *why* a record was returned.

Identifier rules (every entity type): ``identifier_exact`` — a normalised identifier equals the
record's (document number within its issuing country, VIN, plate within its country, IMO, MMSI,
call sign, container number, bill of lading, registration number, alert id, crossing id);
``name_normalised_exact`` — a vessel or organisation name equal after transliteration and token
sorting. Score 1.0. Several identifier criteria in one query are alternatives (any may match).

Person name rules (the best one that applies), scored as::

    name_exact              1.00  same name, same script, ignoring case and punctuation
    name_transliterated     0.98  same name once both are transliterated to ASCII (Олена / Olena)
    name_token_reordered    0.96  same tokens in another order (ZHANG Wei / Wei ZHANG)
    name_phonetic           0.92  same Metaphone keys token for token (Smith / Smyth)
    name_consonant_skeleton 0.90  an abjad name (Arabic, Hebrew) with the same consonants
    name_fuzzy              r     rapidfuzz similarity r >= threshold, capped at 0.95

Date of birth rules multiply the name score::

    dob_exact               1.00  equal, at the same precision
    dob_year_month          0.97  one side knows only year and month, and they agree
    dob_year_only           0.95  one side knows only the year, and it agrees
    dob_day_month_swapped   0.92  day and month transposed
    dob_year_within_1       0.90  the year differs by one, the rest agrees
    dob_not_recorded        0.90  the query gives a date of birth, the record has none

Any other disagreement on the date of birth rules the record out. A person hit needs
``name score x date factor >= threshold`` (the connector's ``match_threshold`` by default).

Candidates come from the store's name index (blocking on phonetic keys and year of birth ±1),
so a lookup reads a few hundred index rows, not the whole store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from connectors.normalise import (
    PartialDate,
    blocking_keys,
    compose_name,
    is_abjad,
    name_forms,
    normalise_country,
    normalise_identifier,
    parse_partial_date,
    phonetic_keys,
    skeleton,
    token_sort,
    transliterate,
    try_partial_date,
)
from connectors.records import NameRow, RecordStorage
from ibex.errors import BadInput, UnknownSchema

DEFAULT_THRESHOLD = 0.85
MAX_CRITERION_CHARS = 400


@dataclass(frozen=True, slots=True)
class _IdentCriterion:
    key: str  # criteria key holding the value
    scheme: str | None  # index scheme (None: taken from ``identifier_scheme``)
    country_key: str | None = None  # criteria key of the qualifying country
    country_required: bool = False
    rule: str = "identifier_exact"


_IDENT: dict[str, tuple[_IdentCriterion, ...]] = {
    "person": (_IdentCriterion("identifiers.value", None, "identifiers.issuing_country"),),
    "travel_document": (
        _IdentCriterion("document_number", "document_number", "issuing_country", True),
    ),
    "vehicle": (
        _IdentCriterion("vin", "vin"),
        _IdentCriterion("plate", "plate", "plate_country", True),
    ),
    "vessel": (
        _IdentCriterion("imo", "imo"),
        _IdentCriterion("mmsi", "mmsi"),
        _IdentCriterion("call_sign", "call_sign"),
        _IdentCriterion("name", "name", "flag", rule="name_normalised_exact"),
    ),
    "shipment": (
        _IdentCriterion("container_number", "container_number"),
        _IdentCriterion("bill_of_lading", "bill_of_lading"),
    ),
    "organisation": (
        _IdentCriterion("registration_number", "registration_number", "country"),
        _IdentCriterion("name", "name", "country", rule="name_normalised_exact"),
    ),
    "alert": (_IdentCriterion("alert_id", "alert_id"),),
    "crossing": (
        _IdentCriterion("crossing_id", "crossing_id"),
        _IdentCriterion(
            "traveller.document_number", "document_number", "traveller.document_country"
        ),
        _IdentCriterion("conveyance.vehicle_plate", "plate"),
        _IdentCriterion("conveyance.vessel_imo", "imo"),
    ),
}
SURNAME, GIVEN, FULL, DOB = "name.surname", "name.given_names", "name.full_name", "date_of_birth"
SCHEME = "identifiers.scheme"
_PERSON_NAME_KEYS = frozenset({SURNAME, GIVEN, FULL, DOB})

#: The criteria keys each entity type accepts. The broker's policy (minimum criteria) and the
#: gateway read this table; a key outside it is refused with :class:`BadInput`.
CRITERIA_FIELDS: dict[str, frozenset[str]] = {
    entity: frozenset(
        {c.key for c in specs}
        | {c.country_key for c in specs if c.country_key}
        | ({SCHEME} | _PERSON_NAME_KEYS if entity == "person" else set())
    )
    for entity, specs in _IDENT.items()
}

NAME_RULE_SCORES = {
    "name_exact": 1.0,
    "name_transliterated": 0.98,
    "name_token_reordered": 0.96,
    "name_phonetic": 0.92,
    "name_consonant_skeleton": 0.90,
}
FUZZY_CAP = 0.95
DOB_NOT_RECORDED = 0.90


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching record: its source id, score, the rules that matched, and its body."""

    source_id: str
    score: float
    rules: tuple[str, ...]
    record: dict[str, Any]


def compare_dob(query: PartialDate, record: PartialDate) -> tuple[float, tuple[str, ...]] | None:
    """The date-of-birth factor and rules, or None when the dates contradict each other."""
    both_month = query.month is not None and record.month is not None
    both_day = query.day is not None and record.day is not None
    rest_equal = (not both_month or query.month == record.month) and (
        not both_day or query.day == record.day
    )
    if query.precision == record.precision:
        partial: tuple[float, tuple[str, ...]] = (1.0, ())
    elif not both_month:
        partial = (0.95, ("dob_year_only",))
    else:
        partial = (0.97, ("dob_year_month",))
    if query.year == record.year and rest_equal:
        return partial if partial[1] else (1.0, ("dob_exact",))
    if (
        query.year == record.year
        and both_day
        and query.month == record.day
        and query.day == record.month
    ):
        return 0.92, ("dob_day_month_swapped",)
    if abs(query.year - record.year) == 1 and rest_equal:
        return 0.90 * partial[0], ("dob_year_within_1", *partial[1])
    return None


@dataclass(frozen=True, slots=True)
class _NameQuery:
    folded: str
    ascii: str
    sorted: str
    compact: str
    phonetic: tuple[str, ...]
    abjad: bool
    surname_only: bool


def _name_query(text: str, *, surname_only: bool) -> _NameQuery:
    forms = name_forms(text)
    return _NameQuery(
        forms.folded,
        forms.ascii,
        forms.sorted,
        forms.ascii.replace(" ", ""),
        tuple(sorted(phonetic_keys(forms.ascii))),
        forms.abjad,
        surname_only,
    )


def score_name(
    query: _NameQuery, folded: str, ascii_form: str, threshold: float
) -> tuple[float, str] | None:
    """The best name rule for one stored name (folded and ASCII forms), or None."""
    if query.folded == folded:
        return 1.0, "name_exact"
    if query.ascii == ascii_form:
        return NAME_RULE_SCORES["name_transliterated"], "name_transliterated"
    if query.sorted == token_sort(ascii_form):
        return NAME_RULE_SCORES["name_token_reordered"], "name_token_reordered"
    best: tuple[float, str] | None = None
    if query.phonetic and query.phonetic == tuple(sorted(phonetic_keys(ascii_form))):
        best = NAME_RULE_SCORES["name_phonetic"], "name_phonetic"
    elif (query.abjad or is_abjad(folded)) and skeleton(query.ascii) == skeleton(ascii_form):
        best = NAME_RULE_SCORES["name_consonant_skeleton"], "name_consonant_skeleton"
    cutoff = threshold * 100
    ratio = max(
        fuzz.token_sort_ratio(query.ascii, ascii_form, score_cutoff=cutoff),
        fuzz.ratio(query.compact, ascii_form.replace(" ", ""), score_cutoff=cutoff),
    )
    if ratio and ratio >= cutoff:
        fuzzy = min(ratio / 100, FUZZY_CAP)
        if best is None or fuzzy > best[0]:
            best = fuzzy, "name_fuzzy"
    return best


class Matcher:
    """Matches criteria against one :class:`~connectors.records.RecordStorage`."""

    def __init__(
        self,
        store: RecordStorage,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        max_candidates: int = 50_000,
        limit: int = 100,
    ) -> None:
        _check_threshold(threshold)
        self._store = store
        self.threshold = threshold
        self.max_candidates = max_candidates
        self.limit = limit

    def match(
        self,
        entity_type: str,
        criteria: Mapping[str, object],
        *,
        threshold: float | None = None,
        limit: int | None = None,
    ) -> list[Hit]:
        """Every record matching ``criteria``, best first (ties by source id), at most
        ``limit``. Raises :class:`BadInput` naming a bad criteria *key*, never a value."""
        threshold = self.threshold if threshold is None else threshold
        _check_threshold(threshold)
        values = _check_criteria(entity_type, criteria)
        found: dict[int, tuple[float, tuple[str, ...]]] = {}
        for spec in _IDENT[entity_type]:
            if spec.key in values:
                for rid in self._find_identifier(entity_type, spec, values):
                    _merge(found, rid, 1.0, (spec.rule,))
        if entity_type == "person" and (SURNAME in values or FULL in values):
            for rid, (score, rules) in self._match_names(values, threshold).items():
                _merge(found, rid, score, rules)
        ranked = self._store.load(found)
        hits = [
            Hit(rec.source_id, round(found[rid][0], 4), found[rid][1], rec.body)
            for rid, rec in ranked.items()
        ]
        hits.sort(key=lambda h: (-h.score, h.source_id))
        return hits[: self.limit if limit is None else limit]

    def _find_identifier(
        self, entity_type: str, spec: _IdentCriterion, values: dict[str, str]
    ) -> list[int]:
        schemes = (values[SCHEME],) if spec.scheme is None else (spec.scheme,)
        value = normalise_identifier(schemes[0], values[spec.key])
        if not value:
            raise BadInput(f"criterion {spec.key} has no letters or digits")
        country = values.get(spec.country_key) if spec.country_key else None
        country = normalise_country(country) if country else None
        return self._store.find_exact(entity_type, schemes, value, country)

    def _match_names(
        self, values: dict[str, str], threshold: float
    ) -> dict[int, tuple[float, tuple[str, ...]]]:
        surname_only = FULL not in values and GIVEN not in values
        text = compose_name(values.get(GIVEN), values.get(SURNAME), values.get(FULL))
        query = _name_query(text, surname_only=surname_only)
        if not query.ascii:
            raise BadInput("the name criteria have no letters or digits")
        dob = values.get("date_of_birth")
        qdob = parse_partial_date(dob, what="criterion date_of_birth") if dob else None
        years = None if qdob is None else [qdob.year - 1, qdob.year, qdob.year + 1]
        # Skeleton keys are always asked for: only names written in an abjad carry them, and a
        # Latin query (Yusuf) must find its Arabic-script spelling (يوسف).
        keys = blocking_keys(query.ascii, abjad=True)
        rows = self._store.candidates_by_name(
            keys, years, self.max_candidates, month_days=_month_days(qdob)
        )
        out: dict[int, tuple[float, tuple[str, ...]]] = {}
        dob_cache: dict[str, tuple[float, tuple[str, ...]] | None] = {}
        for row in rows:
            factor: tuple[float, tuple[str, ...]] = (1.0, ())
            if qdob is not None:
                if row.dob not in dob_cache:
                    rdob = try_partial_date(row.dob)
                    dob_cache[row.dob] = (
                        (DOB_NOT_RECORDED, ("dob_not_recorded",))
                        if rdob is None
                        else compare_dob(qdob, rdob)
                    )
                cached = dob_cache[row.dob]
                if cached is None:
                    continue
                factor = cached
            scored = self._score_row(query, row, threshold)
            if scored is None:
                continue
            score = scored[0] * factor[0]
            # A person has several indexed names (aliases): the best one speaks for the record.
            if score >= threshold and score > out.get(row.rid, (0.0, ()))[0]:
                out[row.rid] = (score, (scored[1], *factor[1]))
        return out

    @staticmethod
    def _score_row(query: _NameQuery, row: NameRow, threshold: float) -> tuple[float, str] | None:
        if query.surname_only and row.surname:
            return score_name(query, row.surname, transliterate(row.surname), threshold)
        return score_name(query, row.folded, row.ascii, threshold)


def _month_days(dob: PartialDate | None) -> list[int] | None:
    """The stored ``month * 100 + day`` values the date rules could accept for ``dob``: the same
    day, the day and month swapped, or the record knowing less (month only, or nothing)."""
    if dob is None or dob.month is None:
        return None
    if dob.day is None:
        return [dob.month * 100 + day for day in range(32)]
    out = [dob.month * 100 + dob.day, dob.month * 100]
    if dob.day <= 12:
        out += [dob.day * 100 + dob.month, dob.day * 100]
    return out


def _merge(
    found: dict[int, tuple[float, tuple[str, ...]]],
    rid: int,
    score: float,
    rules: tuple[str, ...],
) -> None:
    """Keep the best score for a record and the union of the rules that matched it."""
    old = found.get(rid)
    if old is None:
        found[rid] = (score, rules)
        return
    best = max(old[0], score)
    lead, other = (old[1], rules) if old[0] >= score else (rules, old[1])
    found[rid] = (best, tuple(dict.fromkeys((*lead, *other))))


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise BadInput("threshold must be in (0, 1]")


def _check_criteria(entity_type: str, criteria: Mapping[str, object]) -> dict[str, str]:
    """Refuse unknown entity types, unknown keys, non-string or oversized values, qualifiers
    without what they qualify, and criteria that identify nothing."""
    allowed = CRITERIA_FIELDS.get(entity_type)
    if allowed is None:
        raise UnknownSchema(f"no entity type {entity_type[:64]!r} to match")
    if not isinstance(criteria, Mapping) or not criteria:
        raise BadInput("criteria must be a non-empty object")
    values: dict[str, str] = {}
    for key in sorted(criteria, key=str):
        if not isinstance(key, str) or key not in allowed:
            shown = key[:64] if isinstance(key, str) else type(key).__name__
            accepted = ", ".join(sorted(allowed))
            raise BadInput(f"unknown criterion {shown!r} for {entity_type}; accepted: {accepted}")
        value = criteria[key]
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"criterion {key} must be a non-empty string")
        if len(value) > MAX_CRITERION_CHARS:
            raise BadInput(f"criterion {key} is longer than {MAX_CRITERION_CHARS} characters")
        values[key] = value
    primary = False
    for spec in _IDENT[entity_type]:
        if spec.key in values:
            primary = True
            if spec.country_required and spec.country_key not in values:
                raise BadInput(f"criterion {spec.key} needs {spec.country_key}")
        elif spec.country_key in values and not any(
            s.key in values for s in _IDENT[entity_type] if s.country_key == spec.country_key
        ):
            raise BadInput(f"criterion {spec.country_key} needs {spec.key}")
    if entity_type == "person":
        primary = _check_person(values) or primary
    if not primary:
        raise BadInput(f"the criteria identify no {entity_type}")
    return values


def _check_person(values: dict[str, str]) -> bool:
    if ("identifiers.value" in values) != (SCHEME in values):
        raise BadInput("criteria identifiers.value and identifiers.scheme go together")
    if FULL in values and (SURNAME in values or GIVEN in values):
        raise BadInput("give either name.full_name or name.surname and name.given_names")
    if GIVEN in values and SURNAME not in values:
        raise BadInput("criterion name.given_names needs name.surname")
    named = SURNAME in values or FULL in values
    if "date_of_birth" in values and not named:
        raise BadInput("criterion date_of_birth needs name.surname or name.full_name")
    return named
