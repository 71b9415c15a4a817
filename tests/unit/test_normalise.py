"""Name, identifier, country and partial-date normalisation for matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.normalise import (
    PartialDate,
    blocking_keys,
    fold,
    index_forms,
    is_abjad,
    name_forms,
    normalise_country,
    normalise_identifier,
    parse_partial_date,
    phonetic_key,
    phonetic_keys,
    skeleton,
    token_sort,
    transliterate,
)
from ibex.errors import BadInput


def test_fold_keeps_script_and_diacritics_but_not_case_or_punctuation() -> None:
    assert fold("  José   MÜLLER-Smith ") == "josé müller smith"
    assert fold("O'Brien") == "obrien"
    assert fold("Коваленко") == "коваленко"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Владимир Путин", "vladimir putin"),
        ("José Müller", "jose muller"),
        ("Ελένη", "eleni"),
        ("Łukasz Øyvind", "lukasz oyvind"),
        ("محمد علي", "mhmd ly"),
        ("张伟", "zhang wei"),  # a whole Han name: surname syllable, then the given name
        ("伟明", "wei ming"),
    ],
)
def test_transliterate(text: str, expected: str) -> None:
    assert transliterate(text) == expected


def test_han_run_inside_a_longer_name_stays_one_token() -> None:
    assert transliterate("王 伟明") == "wang weiming"


def test_index_forms_agree_with_fold_and_transliterate() -> None:
    for text in ("John O'Neil-Smith", "Олена Коваленко", "Ñandú Pérez"):
        assert index_forms(text) == (fold(text), transliterate(text))


def test_token_sort_and_forms() -> None:
    assert token_sort("wei zhang") == "wei zhang"
    assert token_sort("zhang wei") == "wei zhang"
    forms = name_forms("ZHANG Wei")
    assert (forms.folded, forms.ascii, forms.sorted, forms.abjad) == (
        "zhang wei",
        "zhang wei",
        "wei zhang",
        False,
    )
    assert name_forms("...").empty


def test_phonetic_keys_absorb_transliteration_variants() -> None:
    assert phonetic_key("mohammed") == phonetic_key("muhammad") == phonetic_key("mhmd")
    assert phonetic_key("aleksandr") == phonetic_key("alexander")
    assert phonetic_key("smith") == phonetic_key("smyth")
    assert phonetic_key("ali") == phonetic_key("ly")  # leading vowel dropped for blocking
    assert phonetic_keys("ali") != phonetic_keys("lee")  # but not for the phonetic rule
    assert phonetic_key("12345") == "12345"


def test_blocking_keys_skip_initials() -> None:
    assert blocking_keys("j smith") == {"p:SM0"}
    assert blocking_keys("j k") == {"p:J", "p:K"}  # nothing but initials: use them
    assert blocking_keys("") == set()


def test_abjad_skeleton() -> None:
    assert is_abjad("محمد") and is_abjad("דוד") and not is_abjad("David")
    assert skeleton("mohammed ali") == skeleton("mhmd ly") == "l mhmd"
    assert skeleton("yusuf") == skeleton("ywsf")
    assert skeleton("fatima") == skeleton("ftmh")
    assert "k:ysf" in blocking_keys("ywsf", abjad=True)
    assert not any(k.startswith("k:") for k in blocking_keys("yusuf"))


@pytest.mark.parametrize(
    ("scheme", "value", "expected"),
    [
        ("document_number", "ab 12-34.56", "AB123456"),
        ("document_number", "L898902C<", "L898902C"),
        ("imo", "IMO 9074729", "9074729"),
        ("imo", "9074729", "9074729"),
        ("container_number", "csqu 305438-3", "CSQU3054383"),
        ("plate", "ab-123 cd", "AB123CD"),
        ("name", "Océan  Star", "ocean star"),
    ],
)
def test_normalise_identifier(scheme: str, value: str, expected: str) -> None:
    assert normalise_identifier(scheme, value) == expected


def test_normalise_country() -> None:
    assert normalise_country("ca") == "CAN"
    assert normalise_country("CAN") == "CAN"
    assert normalise_country("D") == "DEU"
    assert normalise_country("XXA") == "XXA"


def test_partial_dates() -> None:
    assert parse_partial_date("1980") == PartialDate(1980)
    assert parse_partial_date("1980-03") == PartialDate(1980, 3)
    assert parse_partial_date("1980-03-07") == PartialDate(1980, 3, 7)
    assert parse_partial_date("1980-03-07").precision == "day"


@pytest.mark.parametrize("bad", ["", "8O", "1980-13", "1980-02-30", "07/03/1980", "1980-3-7"])
def test_bad_partial_dates_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(BadInput) as exc:
        parse_partial_date(bad, what="criterion date_of_birth")
    assert "date_of_birth" in exc.value.detail
    if bad:
        assert bad not in exc.value.detail


@given(st.text(max_size=60))
def test_transliteration_is_ascii_lowercase_and_idempotent(text: str) -> None:
    out = transliterate(text)
    assert out.isascii()
    assert out == out.lower() == out.strip()
    assert "  " not in out
    assert transliterate(out) == out


@given(st.lists(st.sampled_from(["anna", "ivanova", "li", "wei", "o'neil"]), max_size=4))
def test_token_sort_ignores_order(tokens: list[str]) -> None:
    text = " ".join(tokens)
    shuffled = " ".join(reversed(tokens))
    assert token_sort(transliterate(text)) == token_sort(transliterate(shuffled))


def test_characters_without_a_reading_still_get_a_stable_ascii_form() -> None:
    # Found by hypothesis: anyascii has no reading for this CJK Extension B character, and a
    # name made of it used to have an empty comparison form, so it never matched itself.
    form = transliterate("\U000223a4")
    assert form and form.isascii()
    assert transliterate("\U000223a4") == form
