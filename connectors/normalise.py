"""Normalisation for matching: names, phonetic keys, identifiers, countries and partial dates.

Names are compared at three levels so that every match can say *why* it matched:

* the **folded** form keeps the script and diacritics (NFKC, case-folded, punctuation removed);
* the **ASCII** form transliterates everything with ``anyascii`` (Cyrillic, Greek, Arabic, Han,
  Hangul, Latin with diacritics all become plain lower-case ASCII);
* the **sorted** form is the ASCII tokens in sorted order (given names and surname swapped,
  Chinese surname-first order, and so on).

Phonetic keys are Metaphone codes of each ASCII token, with a leading vowel dropped. Metaphone
rather than Soundex or NYSIIS because it keeps a consonant skeleton that survives the vowel
changes typical of transliteration (Mohammed / Muhammad / ``mhmd``, Aleksandr / Alexander all give
one key), yet is far less coarse than Soundex; dropping the leading vowel makes ``Ali`` and the
abjad transliteration ``ly`` agree. The keys are used for *blocking* (finding candidates cheaply in
the index), never on their own as proof of a match. For names written in an abjad (Arabic,
Hebrew, Syriac, Thaana), which omit short vowels, the consonant skeleton is also compared.

Nothing here ever puts a value in an error message.
"""

from __future__ import annotations

import calendar
import functools
import re
import unicodedata
from dataclasses import dataclass

import jellyfish
import pycountry
from anyascii import anyascii
from stdnum import imo as stdnum_imo

from ibex.errors import BadInput

# Apostrophes (and the Arabic ain/hamza that anyascii renders as ` or ') join letters; every
# other non-alphanumeric character separates tokens.
_APOSTROPHES = str.maketrans("", "", "'`\u2018\u2019\u02bc\u02bb\u02be\u02bf")
_NON_ALNUM = re.compile(r"[\W_]+")
_ASCII_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_CAPITALISED = re.compile(r"[A-Z][a-z]*|[^A-Z]+")
_VOWELS = frozenset("aeiouy")
# Hebrew, Arabic, Syriac, Arabic supplement, Thaana, Arabic extended-A, presentation forms.
_ABJAD = re.compile("[\u0590-\u077f\u0780-\u07bf\u08a0-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")
# Han ideographs (CJK unified, extension A) and Hangul syllables: one character, one syllable.
_SYLLABIC = re.compile("[\u4e00-\u9fff\u3400-\u4dbf\uac00-\ud7a3]")


def is_abjad(text: str) -> bool:
    """True if ``text`` contains letters of a script that does not write short vowels."""
    return not text.isascii() and _ABJAD.search(text) is not None


@functools.lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """The script-preserving comparison form: NFKC, case-folded, punctuation removed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    return " ".join(_NON_ALNUM.sub(" ", text).split())


def _transliterate_ideographs(text: str) -> str:
    """Han and Hangul names: anyascii gives capitalised syllables (张伟 -> ZhangWei). A whole name
    in one run of two to four characters is read as surname + given name (the usual order), so
    it becomes ``Zhang Wei``; a run inside a separately recorded field is kept as one token."""
    out: list[str] = []
    runs = re.split(r"(\s+)", text)
    whole = len([r for r in runs if r.strip()]) == 1
    for run in runs:
        if run and _SYLLABIC.sub("", run) == "":
            syllables = _CAPITALISED.findall(anyascii(run))
            if whole and 2 <= len(run) <= 4 and len(syllables) >= 2:
                out.append(syllables[0] + " " + "".join(syllables[1:]))
            else:
                out.append("".join(syllables))
        else:
            out.append(run)
    return "".join(out)


@functools.lru_cache(maxsize=65536)
def transliterate(text: str) -> str:
    """The ASCII comparison form: lower-case ASCII tokens separated by single spaces."""
    text = original = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        if _SYLLABIC.search(text):
            text = _transliterate_ideographs(text)
        text = anyascii(text)
    out = " ".join(_ASCII_NON_ALNUM.sub(" ", text.lower().translate(_APOSTROPHES)).split())
    if not out:
        # Characters anyascii has no reading for (rare CJK extensions, some scripts): a stable
        # ASCII spelling of their code points, so the name still matches itself exactly.
        out = " ".join("x" + "".join(f"{ord(c):x}" for c in t) for t in fold(original).split())
    return out


def token_sort(ascii_form: str) -> str:
    """Tokens in sorted order: the form that ignores the order names were written in."""
    return " ".join(sorted(ascii_form.split()))


@functools.lru_cache(maxsize=65536)
def metaphone(token: str) -> str:
    """Metaphone of one ASCII token (digits, and letters with no ASCII form, kept as they are)."""
    if token.isascii() and token.isalpha():
        return str(jellyfish.metaphone(token))
    return token.upper()


@functools.lru_cache(maxsize=65536)
def phonetic_key(token: str) -> str:
    """The blocking key of one token: Metaphone with a leading vowel dropped (coarser, so that
    an abjad spelling without the vowel still finds the candidate)."""
    key = metaphone(token)
    if len(key) > 1 and key[0] in "AEIOU":
        key = key[1:]
    return key


def phonetic_keys(ascii_form: str) -> list[str]:
    """The Metaphone code of each token, in token order (empty codes are dropped). These, not
    the coarser blocking keys, decide the ``name_phonetic`` rule: Ali and Lee differ here."""
    return [k for k in (metaphone(t) for t in ascii_form.split()) if k]


def blocking_keys(ascii_form: str, *, abjad: bool = False) -> set[str]:
    """Index keys for finding candidates: each token's phonetic key (tokens of two or more
    characters; initials would block with half the index, so they count only when a name has
    nothing else); names written in an abjad also get each token's consonant skeleton (see
    :func:`skeleton`). A candidate needs to share one key with the query, so a typo has to
    change the key of *every* token of a name to lose it."""
    tokens = ascii_form.split()
    long_tokens = [t for t in tokens if len(t) > 1] or tokens
    keys = {"p:" + (phonetic_key(t) or t) for t in long_tokens}
    if abjad:
        keys.update("k:" + k for k in skeleton(ascii_form).split())
    return keys


def _skeleton_token(token: str) -> str:
    # Long vowels are written with waw and ya, so w and y after the first letter are vowels;
    # a final h is usually the feminine ending (ta marbuta) that Latin spellings drop.
    out = token[0] if token[0] not in _VOWELS - {"y"} else ""
    for c in token[1:]:
        if c not in _VOWELS and c != "w" and (not out or c != out[-1]):
            out += c
    if len(out) > 1 and out.endswith("h"):
        out = out[:-1]
    return out or token


def skeleton(ascii_form: str) -> str:
    """Sorted consonant skeletons of the tokens (vowels, and w/y after the first letter,
    removed; doubled letters collapsed; a final h dropped): how an abjad writes a name, so that
    ``mhmd`` and ``Mohammed``, ``ywsf`` and ``Yusuf``, ``ftmh`` and ``Fatima`` compare equal."""
    return " ".join(sorted(_skeleton_token(t) for t in ascii_form.split()))


@dataclass(frozen=True, slots=True)
class NameForms:
    """One name in every comparison form the matcher uses."""

    folded: str
    ascii: str
    sorted: str
    abjad: bool

    @property
    def empty(self) -> bool:
        return not self.ascii


def compose_name(given_names: str | None, surname: str | None, full_name: str | None) -> str:
    """The whole name as one string: the full name if recorded, else given names + surname."""
    if full_name:
        return full_name
    return " ".join(p for p in (given_names, surname) if p)


def index_forms(text: str) -> tuple[str, str]:
    """(folded, ASCII) forms of a name, computed once when the text is plain ASCII (where the
    two coincide): the import hot path indexes every name of every record."""
    if text.isascii():
        ascii_form = " ".join(
            _ASCII_NON_ALNUM.sub(" ", text.lower().translate(_APOSTROPHES)).split()
        )
        return ascii_form, ascii_form
    return fold(text), transliterate(text)


@dataclass(frozen=True, slots=True)
class NamePart:
    """The index forms of one name field (given names, surname or full name), worked out once
    per distinct field: a whole name's forms are its fields' forms joined (see
    :func:`name_part`), and the same given names and surnames recur throughout an import."""

    folded: str
    ascii: str  # may be empty: then the whole name needs :func:`transliterate`'s fallback
    abjad: bool
    long_keys: frozenset[str]  # blocking keys of the tokens longer than one character
    all_keys: frozenset[str]  # blocking keys of every token (for names of initials only)
    skeleton_keys: frozenset[str]  # consonant-skeleton keys, used when the name is abjad


@functools.lru_cache(maxsize=32768)
def name_part(text: str) -> NamePart | None:
    """The index forms of one name field, or None when the field contains Han or Hangul (whose
    reading depends on the whole name, see :func:`transliterate`).

    The folded and ASCII forms of ``a + " " + b`` are those of ``a`` and ``b`` joined by a
    space: NFKC never composes across a space, case folding, transliteration and the
    separator rules work character by character, and the forms are then split into tokens.
    Blocking keys are per token. So a name's forms can be put together from its fields',
    which the import caches; a test holds this to :func:`fold`, :func:`transliterate` and
    :func:`blocking_keys` of the whole name."""
    norm = unicodedata.normalize("NFKC", text)
    if norm.isascii():
        ascii_text = norm
    elif _SYLLABIC.search(norm):
        return None
    else:
        ascii_text = anyascii(norm)
    ascii_form = " ".join(
        _ASCII_NON_ALNUM.sub(" ", ascii_text.lower().translate(_APOSTROPHES)).split()
    )
    tokens = ascii_form.split()
    long_tokens = [t for t in tokens if len(t) > 1]
    long_keys = frozenset("p:" + (phonetic_key(t) or t) for t in long_tokens)
    all_keys = frozenset("p:" + (phonetic_key(t) or t) for t in tokens)
    return NamePart(
        folded=ascii_form if text.isascii() else fold(text),
        ascii=ascii_form,
        abjad=is_abjad(text),
        long_keys=long_keys,
        all_keys=long_keys if len(long_tokens) == len(tokens) else all_keys,
        skeleton_keys=frozenset("k:" + _skeleton_token(t) for t in tokens),
    )


def name_forms(text: str) -> NameForms:
    """All comparison forms of ``text`` (a whole name or a surname)."""
    folded = fold(text)
    # Letters anyascii cannot spell (rare ideographs) keep their folded form, so that such a
    # name is still indexed and still matches itself.
    ascii_form = transliterate(text) or folded
    return NameForms(folded, ascii_form, token_sort(ascii_form), is_abjad(text))


# --- identifiers -------------------------------------------------------------------------------

_ID_SEPARATORS = re.compile(r"[\s\-./<_]+")


def normalise_identifier(scheme: str, value: str) -> str:
    """Canonical form of an identifier for exact lookup: NFKC, upper case, no spaces, dashes,
    dots, slashes or MRZ fillers. IMO numbers lose their ``IMO`` prefix (python-stdnum's
    ``compact``), so ``IMO 9074729`` and ``9074729`` are the same key."""
    text = unicodedata.normalize("NFKC", value).upper()
    if scheme == "imo":
        text = str(stdnum_imo.compact(text))
    elif scheme == "name":
        return token_sort(transliterate(value))
    return _ID_SEPARATORS.sub("", text)


# ICAO Doc 9303 one-letter code for Germany, as it appears in German passports.
_COUNTRY_ALIASES = {"D": "DEU"}


@functools.lru_cache(maxsize=1024)
def normalise_country(code: str) -> str:
    """An alpha-3 (or ICAO special) code in upper case; alpha-2 codes are converted so that
    ``CA`` and ``CAN`` agree. Unknown codes are kept as given, upper-cased: a country that does
    not exist simply matches nothing."""
    text = code.strip().upper()
    text = _COUNTRY_ALIASES.get(text, text)
    if len(text) == 2:
        country = pycountry.countries.get(alpha_2=text)
        if country is not None:
            return str(country.alpha_3)
    return text


# --- partial dates -----------------------------------------------------------------------------

_PARTIAL_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")


@dataclass(frozen=True, slots=True)
class PartialDate:
    """A date known to the year, the month or the day."""

    year: int
    month: int | None = None
    day: int | None = None

    @property
    def precision(self) -> str:
        return "day" if self.day is not None else "month" if self.month is not None else "year"


@functools.lru_cache(maxsize=65536)
def parse_partial_date(text: str, *, what: str = "date") -> PartialDate:
    """Parse ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; raise :class:`BadInput` naming ``what``."""
    match = _PARTIAL_DATE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BadInput(f"{what} must be a date such as 1980, 1980-03 or 1980-03-07")
    year, month, day = int(match[1]), match[2], match[3]
    m = int(month) if month else None
    d = int(day) if day else None
    if m is not None and not 1 <= m <= 12:
        raise BadInput(f"{what} has a month outside 1-12")
    if d is not None and m is not None:  # noqa: SIM102
        if not 1 <= d <= calendar.monthrange(year, m)[1]:
            raise BadInput(f"{what} has a day that does not exist in its month")
    return PartialDate(year, m, d)


def try_partial_date(text: object) -> PartialDate | None:
    """Like :func:`parse_partial_date` but None for anything unparseable (stored data)."""
    if not isinstance(text, str):
        return None
    try:
        return parse_partial_date(text)
    except BadInput:
        return None
