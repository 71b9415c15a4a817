"""Synthetic but realistic records for the demo federation, validated by the shared schemas.

Names come from ``faker`` in several locales and scripts (Cyrillic, Greek, Chinese, Japanese,
Arabic, Latin), each non-Latin name stored the way a border agency holds it: the Latin form of
the travel document as the primary name and the original script as an alias. Identifiers carry
valid check digits (North American VINs, IMO numbers, ISO 6346 container numbers), so they pass
the same format checks as real ones.

Speed: faker is consulted only to fill small pools per locale (a few hundred names and companies);
records are then drawn from the pools with one seeded :class:`random.Random`, so twenty thousand
records take a fraction of a second and the same seed always gives the same records.

The scenario of ``ibex demo`` needs certain records to exist: they are *planted* here
(:data:`TRAVELLER`, :data:`SUSPECT`, :data:`VESSEL`, :data:`DOCUMENT`), and the generated records
never reuse their names or numbers, so every scenario query finds exactly the planted record.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from anyascii import anyascii
from faker import Faker
from stdnum import imo as stdnum_imo
from stdnum import iso6346

Record = dict[str, Any]
TODAY = dt.date(2026, 6, 1)  # a fixed "now", so that the same seed gives the same records
POOL = 160  # names per locale, gender and part; combinations give tens of thousands of people

# Planted records: the scenario asks for exactly these.
TRAVELLER = {"surname": "KOVALENKO", "given_names": "OLENA", "date_of_birth": "1987-03-14"}
SUSPECT = {"surname": "HADDAD", "given_names": "KARIM", "date_of_birth": "1979-11-02"}
VESSEL = {"imo": "IMO9074729", "name": "NORTHERN DAWN"}
DOCUMENT = {"document_number": "AB1234567", "issuing_country": "CAN"}
_RESERVED_SURNAMES = frozenset({TRAVELLER["surname"], SUSPECT["surname"]})

# What each agency holds (share of its records per entity type) and its usual handling codes.
HOLDINGS: dict[str, dict[str, float]] = {
    "CA-CBSA": {"person": 0.35, "travel_document": 0.25, "vehicle": 0.15, "shipment": 0.15},
    "CA-RCMP": {"person": 0.55, "vehicle": 0.2, "vessel": 0.05, "travel_document": 0.05},
    "US-CBP": {"person": 0.35, "travel_document": 0.2, "vehicle": 0.15, "shipment": 0.2},
    "US-USCG": {"vessel": 0.55, "person": 0.35},
    "MX-INM": {"person": 0.5, "travel_document": 0.45},
}
HANDLING = {
    "CA-CBSA": ("H1", "H2"),
    "CA-RCMP": ("H2", "H3"),
    "US-CBP": ("H1", "TLP:AMBER"),
    "US-USCG": ("H0", "H1"),
    "MX-INM": ("TLP:AMBER",),
}
# Where each agency's people come from (locale -> weight); the rest of the world is "other".
ORIGINS: dict[str, dict[str, int]] = {
    "CA-CBSA": {"en_CA": 25, "fr_CA": 20, "en_US": 15, "es_MX": 10, "zh_CN": 8, "ar": 7},
    "CA-RCMP": {"en_CA": 30, "fr_CA": 20, "en_US": 10, "es_MX": 8, "ru_RU": 6, "ar": 7},
    "US-CBP": {"en_US": 35, "es_MX": 20, "en_CA": 10, "fr_CA": 5, "zh_CN": 8, "ar": 7},
    "US-USCG": {"en_US": 30, "es_MX": 15, "el_GR": 12, "ru_RU": 8, "zh_CN": 10},
    "MX-INM": {"es_MX": 45, "en_US": 15, "en_CA": 5, "zh_CN": 5, "ar": 5},
}
_EVERYWHERE = {"uk_UA": 5, "ru_RU": 3, "ja_JP": 3, "el_GR": 3, "zh_CN": 2}


@dataclass(frozen=True, slots=True)
class Locale:
    script: str  # ISO 15924 code of the original script
    countries: tuple[str, ...]  # ISO 3166-1 alpha-3 nationalities
    cities: tuple[tuple[str, str], ...]  # places of birth: (city, country)


def _cities(country: str, *names: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, country) for name in names)


LOCALES: dict[str, Locale] = {
    "en_US": Locale("Latn", ("USA",), _cities("USA", "Chicago", "Houston", "Seattle", "Buffalo")),
    "en_CA": Locale("Latn", ("CAN",), _cities("CAN", "Toronto", "Vancouver", "Halifax", "Regina")),
    "fr_CA": Locale("Latn", ("CAN",), _cities("CAN", "Montréal", "Québec", "Gatineau")),
    "es_MX": Locale("Latn", ("MEX",), _cities("MEX", "Ciudad de México", "Tijuana", "Monterrey")),
    "ru_RU": Locale("Cyrl", ("RUS",), _cities("RUS", "Moskva", "Sankt-Peterburg", "Kazan")),
    "uk_UA": Locale("Cyrl", ("UKR",), _cities("UKR", "Kyiv", "Kharkiv", "Odesa", "Lviv")),
    "el_GR": Locale(
        "Grek", ("GRC", "CYP"), (*_cities("GRC", "Athina", "Piraeus"), ("Lemesos", "CYP"))
    ),
    "zh_CN": Locale("Hans", ("CHN",), _cities("CHN", "Shanghai", "Shenzhen", "Guangzhou")),
    "ja_JP": Locale("Jpan", ("JPN",), _cities("JPN", "Tokyo", "Osaka", "Yokohama", "Sapporo")),
    "ar": Locale(
        "Arab",
        ("SYR", "LBN", "JOR", "EGY", "IRQ"),
        (("Dimashq", "SYR"), ("Bayrut", "LBN"), ("Amman", "JOR"), ("Al-Qahira", "EGY")),
    ),
}
# faker's Arabic locales transliterate poorly (consonants only), so Arabic names are a curated
# list of (original script, usual passport spelling).
_AR_GIVEN_M = (
    ("كريم", "KARIM"), ("أحمد", "AHMAD"), ("محمد", "MOHAMMED"), ("عمر", "OMAR"), ("يوسف", "YOUSEF"),
    ("خالد", "KHALED"), ("سامي", "SAMI"), ("طارق", "TAREK"), ("حسن", "HASSAN"), ("علي", "ALI"),
)  # fmt: skip
_AR_GIVEN_F = (
    ("فاطمة", "FATIMA"), ("ليلى", "LAYLA"), ("مريم", "MARYAM"), ("نور", "NOUR"), ("رنا", "RANA"),
    ("سلمى", "SALMA"), ("هدى", "HUDA"), ("ياسمين", "YASMINE"), ("دينا", "DINA"), ("عائشة", "AISHA"),
)  # fmt: skip
_AR_SURNAMES = (
    ("الخطيب", "AL-KHATIB"), ("نصر", "NASSER"), ("عبدالله", "ABDULLAH"), ("سليمان", "SULEIMAN"),
    ("المصري", "AL-MASRI"), ("حمدان", "HAMDAN"), ("عيسى", "ISSA"), ("الأحمد", "AL-AHMAD"),
    ("زيدان", "ZIDANE"), ("شهاب", "SHEHAB"), ("قاسم", "KASSEM"), ("الشامي", "AL-SHAMI"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Name:
    original: str  # as written in the locale's script
    latin: str  # upper-case Latin form, as in the travel document's machine-readable zone


@dataclass(frozen=True, slots=True)
class _Pools:
    given: Mapping[str, tuple[_Name, ...]]  # "F" / "M"
    surnames: Mapping[str, tuple[_Name, ...]]  # "F" / "M" (Slavic and Greek surnames inflect)
    companies: tuple[str, ...]


def _latin(text: str, locale: str = "") -> str:
    latin = anyascii(text).upper().replace("'", "").strip()
    # ELOT 743 writes omicron-upsilon as OU, where a letter-by-letter transliteration gives OY.
    return latin.replace("OY", "OU") if locale == "el_GR" else latin


@functools.cache
def _pools(locale: str) -> _Pools:
    if locale == "ar":
        names = {
            "F": tuple(_Name(*n) for n in _AR_GIVEN_F),
            "M": tuple(_Name(*n) for n in _AR_GIVEN_M),
        }
        family = tuple(_Name(*n) for n in _AR_SURNAMES)
        return _Pools(names, {"F": family, "M": family}, ("شركة النور للتجارة",))
    fake = Faker(locale)
    fake.seed_instance(sum(map(ord, locale)))
    given: dict[str, tuple[_Name, ...]] = {}
    surnames: dict[str, tuple[_Name, ...]] = {}
    for sex, suffix in (("F", "female"), ("M", "male")):
        if locale == "ja_JP":
            pairs = [getattr(fake, f"first_name_{suffix}_pair")() for _ in range(POOL)]
            given[sex] = tuple(_Name(k, r.upper()) for k, _kana, r in pairs)
            lasts = [fake.last_name_pair() for _ in range(POOL)]
            surnames[sex] = tuple(_Name(k, r.upper()) for k, _kana, r in lasts)
            continue
        first = getattr(fake, f"first_name_{suffix}")
        last = getattr(fake, f"last_name_{suffix}", fake.last_name)
        given[sex] = tuple({_Name(n, _latin(n, locale)) for n in (first() for _ in range(POOL))})
        surnames[sex] = tuple(
            n
            for n in {_Name(s, _latin(s, locale)) for s in (last() for _ in range(POOL))}
            if n.latin not in _RESERVED_SURNAMES
        )
    companies = tuple({fake.company() for _ in range(40)})
    return _Pools(
        {k: tuple(sorted(v, key=lambda n: n.latin)) for k, v in given.items()},
        {k: tuple(sorted(v, key=lambda n: n.latin)) for k, v in surnames.items()},
        tuple(sorted(companies)),
    )


# --- identifiers with check digits -------------------------------------------------------------

_VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
_VIN_VALUES = dict(
    zip(_VIN_ALPHABET, [*range(10), *range(1, 9), *range(1, 6), 7, 9, *range(2, 10)], strict=True)
)
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_VIN_YEARS = "ABCDEFGHJKLMNPRSTVWXY"  # model years 2010-2030 (2001-2009 are the digits 1-9)


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 / 49 CFR 565 check digit of a 17-character VIN (position 9 is ignored)."""
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True)) % 11
    return "X" if total == 10 else str(total)


def make_vin(wmi: str, year: int, rng: random.Random) -> str:
    vds = "".join(rng.choice(_VIN_ALPHABET[:-1]) for _ in range(5))
    code = str(year - 2000) if year < 2010 else _VIN_YEARS[year - 2010]
    plant = rng.choice("ABCDEFGHKLMNPRSTUVWXZ")
    draft = f"{wmi}{vds}0{code}{plant}{rng.randrange(10**6):06d}"
    return draft[:8] + vin_check_digit(draft) + draft[9:]


def make_imo(rng: random.Random) -> str:
    body = f"{rng.randint(7, 9)}{rng.randrange(10**5):05d}"
    return f"IMO{body}{stdnum_imo.calc_check_digit(body)}"


def make_container(owner: str, rng: random.Random) -> str:
    """``owner`` is the owner code with its category letter (``MSCU``)."""
    body = f"{owner}{rng.randrange(10**6):06d}"
    return body + iso6346.calc_check_digit(body)


# --- reference data ----------------------------------------------------------------------------

_VEHICLES = (
    ("1FT", "Ford", ("F-150", "F-250", "Ranger")), ("1FM", "Ford", ("Explorer", "Escape")),
    ("1GC", "Chevrolet", ("Silverado", "Colorado")), ("2HG", "Honda", ("Civic",)),
    ("5FN", "Honda", ("Pilot", "Odyssey")), ("4T1", "Toyota", ("Camry",)),
    ("2T3", "Toyota", ("RAV4",)), ("3N1", "Nissan", ("Versa", "Sentra")),
    ("3VW", "Volkswagen", ("Jetta",)), ("1C6", "Ram", ("1500", "2500")),
    ("5YJ", "Tesla", ("Model 3", "Model Y")), ("1XK", "Kenworth", ("T680", "W900")),
    ("1XP", "Peterbilt", ("579", "389")), ("3HS", "International", ("LT", "HX")),
)  # fmt: skip
_COLOURS = ("white", "black", "silver", "grey", "blue", "red", "green", "beige")
# flag -> (MMSI maritime identification digits, call-sign prefixes)
_FLAGS = {
    "CAN": (("316",), ("CF", "CG", "VC")), "USA": (("303", "338", "366", "367"), ("W", "K")),
    "MEX": (("345",), ("XC",)), "PAN": (("351", "352", "370"), ("3E", "HO", "HP")),
    "LBR": (("636",), ("A8", "D5")), "MHL": (("538",), ("V7",)), "BHS": (("308", "311"), ("C6",)),
    "GRC": (("237", "240"), ("SV", "SX")), "CHN": (("412", "413"), ("BQ", "BR")),
    "RUS": (("273",), ("UB", "UF")), "MLT": (("215", "248"), ("9H",)), "NOR": (("257",), ("LA",)),
}  # fmt: skip
_VESSEL_WORDS = (
    ("NORTHERN", "PACIFIC", "ATLANTIC", "GOLDEN", "OCEAN", "SILVER", "GREAT LAKES", "POLAR",
     "BLUE", "CORAL", "EASTERN", "SEA", "CAPE", "ARCTIC", "STAR", "OCEANIC", "GULF"),
    ("STAR", "TRADER", "SPIRIT", "PRIDE", "EXPRESS", "HARMONY", "VOYAGER", "MARINER", "BREEZE",
     "HORIZON", "FORTUNE", "PIONEER", "ROSE", "FALCON", "ENDEAVOUR", "LEGACY", "GLORY"),
)  # fmt: skip
_VESSEL_TYPES = (
    "container ship", "bulk carrier", "oil tanker", "general cargo", "ro-ro cargo",
    "LNG tanker", "fishing vessel", "tug", "passenger ferry", "pleasure craft",
)  # fmt: skip
_CARRIERS = (
    ("MSCU", "MEDU"), ("MAEU", "MAEU"), ("CSQU", "COSU"), ("CMAU", "CMDU"), ("HLXU", "HLCU"),
    ("OOLU", "OOLU"), ("EGHU", "EGLV"), ("ONEU", "ONEY"), ("ZIMU", "ZIMU"), ("YMLU", "YMLU"),
)  # fmt: skip
_GOODS = (
    ("850440", "Static converters (power supplies)"), ("847130", "Portable computers"),
    ("851713", "Smartphones"), ("870323", "Passenger vehicles, 1,500-3,000 cc"),
    ("940360", "Wooden furniture"), ("610910", "Cotton T-shirts"), ("640399", "Leather footwear"),
    ("300490", "Medicaments, packaged"), ("950300", "Toys"), ("220421", "Wine in bottles"),
    ("090111", "Coffee, not roasted"), ("080390", "Bananas, fresh"), ("030617", "Frozen shrimp"),
    ("401110", "Tyres for passenger cars"), ("293299", "Heterocyclic compounds (precursors)"),
    ("930630", "Cartridges for firearms"), ("240220", "Cigarettes containing tobacco"),
)  # fmt: skip
_CURRENCIES = {"CAN": "CAD", "USA": "USD", "MEX": "MXN", "CHN": "CNY", "JPN": "JPY"}
_PORTS = ("CHN", "CHN", "CHN", "VNM", "KOR", "JPN", "DEU", "NLD", "MEX", "COL", "IND", "TUR")
_ALERTS = (
    ("wanted", "detain"), ("smuggling", "specific_check"), ("trafficking", "discreet_check"),
    ("immigration_violation", "refuse_entry"), ("stolen_property", "seize"),
    ("missing_person", "notify"), ("terrorism_watch", "discreet_check"), ("other", "observe"),
)  # fmt: skip


# --- the generator ---------------------------------------------------------------------------


def plan(member: str, total: int) -> dict[str, int]:
    """How many generated records of each entity type ``member`` holds out of ``total``: its
    holdings, and alerts (lookouts) for the rest. The planted records come on top."""
    shares = HOLDINGS.get(member, {})
    counts = {entity: int(total * share) for entity, share in shares.items()}
    if shares:
        counts["alert"] = max(total - sum(counts.values()), 0)
    return {k: v for k, v in counts.items() if v > 0}


class _Maker:
    """Draws one agency's records from the pools."""

    def __init__(self, member: str, seed: int) -> None:
        self.member = member
        # Synthetic data, reproducible from the seed: not a secret.
        self.rng = random.Random(f"{seed}:{member}")  # noqa: S311
        weights = {**_EVERYWHERE, **ORIGINS.get(member, {"en_US": 1})}
        self.locales = list(weights)
        self.weights = list(weights.values())
        self.handling = HANDLING.get(member, ("H1",))
        self.persons: list[tuple[str, Record]] = []  # (source id, record) for documents, alerts
        self.serial = 0

    def meta(self, prefix: str) -> dict[str, str]:
        self.serial += 1
        rng = self.rng
        stamp = dt.datetime(2023, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(10**8))
        return {
            "source_id": f"{self.member}:{prefix}-{self.serial:07d}",
            "handling": rng.choice(self.handling),
            "updated_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def person(self) -> Record:
        rng = self.rng
        locale = rng.choices(self.locales, self.weights)[0]
        info, pools = LOCALES[locale], _pools(locale)
        sex = "F" if rng.random() < 0.48 else "M"
        given, surname = rng.choice(pools.given[sex]), rng.choice(pools.surnames[sex])
        if locale == "es_MX":  # two surnames, paternal then maternal
            maternal = rng.choice(pools.surnames[sex])
            surname = _Name(
                f"{surname.original} {maternal.original}", f"{surname.latin} {maternal.latin}"
            )
        name: Record = {"given_names": given.latin, "surname": surname.latin, "script": "Latn"}
        aliases: list[Record] = []
        if info.script in ("Hans", "Jpan"):  # written surname first, without a space
            aliases.append({"full_name": surname.original + given.original, "script": info.script})
        elif info.script != "Latn" or (
            given.original.upper() != given.latin or surname.original.upper() != surname.latin
        ):  # the original script, or the Latin spelling with its accents
            aliases.append(
                {"given_names": given.original, "surname": surname.original, "script": info.script}
            )
        elif rng.random() < 0.12:  # a maiden or married name
            other = rng.choice(pools.surnames[sex]).latin
            aliases.append({"given_names": given.latin, "surname": other, "script": "Latn"})
        born = dt.date(1944, 1, 1) + dt.timedelta(days=rng.randrange(365 * 63))
        roll = rng.random()
        dob = born.isoformat() if roll > 0.06 else born.isoformat()[: 4 if roll < 0.03 else 7]
        city, birth_country = rng.choice(info.cities)
        nationality = birth_country if rng.random() < 0.9 else rng.choice(info.countries)
        body: Record = {
            "record": self.meta("P"),
            "name": name,
            "date_of_birth": dob,
            "place_of_birth": {"city": city, "country": birth_country},
            "sex": sex if rng.random() > 0.005 else "X",
            "nationalities": [nationality] if rng.random() > 0.08 else [nationality, "CAN"],
        }
        if aliases:
            body["aliases"] = aliases
        if nationality == "CAN" and len(body["nationalities"]) == 2:
            body["nationalities"] = ["CAN", "USA"]
        if rng.random() < 0.5:
            body["identifiers"] = [
                {"scheme": "passport", "value": self.doc_number(nationality),
                 "issuing_country": nationality}
            ]  # fmt: skip
        self.persons.append((body["record"]["source_id"], body))
        return body

    def doc_number(self, country: str) -> str:
        rng = self.rng
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        if country == "CAN":
            return rng.choice(letters) + rng.choice(letters) + f"{rng.randrange(10**7):07d}"
        if country == "USA":
            return f"{rng.randrange(10**8, 10**9)}"
        if country == "MEX":
            return rng.choice("GN") + f"{rng.randrange(10**8):08d}"
        return rng.choice(letters) + rng.choice(letters) + f"{rng.randrange(10**7):07d}"

    def travel_document(self) -> Record:
        rng = self.rng
        holder = rng.choice(self.persons)[1] if self.persons else self.person()
        country = holder["nationalities"][0]
        number = self.doc_number(country)
        while number == DOCUMENT["document_number"]:
            number = self.doc_number(country)
        issued = TODAY - dt.timedelta(days=rng.randrange(1, 365 * 11))
        expires = dt.date(issued.year + 10, issued.month, min(issued.day, 28))
        roll = rng.random()
        status = (
            "lost"
            if roll < 0.03
            else "stolen"
            if roll < 0.06
            else "revoked"
            if roll < 0.07
            else "valid"
        )
        if expires < TODAY and status == "valid":
            status = "expired"
        return {
            "record": self.meta("D"),
            "document_number": number,
            "document_type": "P" if roll < 0.9 else "PC" if country == "USA" else "ID",
            "issuing_country": country,
            "nationality": country,
            "holder_name": dict(holder["name"]),
            "holder_date_of_birth": holder["date_of_birth"],
            "date_of_issue": issued.isoformat(),
            "date_of_expiry": expires.isoformat(),
            "status": status,
        }

    def plate(self, country: str) -> str:
        rng = self.rng
        a, d = "ABCDEFGHJKLMNPRSTVWXYZ", "0123456789"

        def pick(chars: str, n: int) -> str:
            return "".join(rng.choice(chars) for _ in range(n))

        if country == "CAN":
            return rng.choice(
                (f"{pick(a, 4)} {pick(d, 3)}", f"{pick(a, 1)}{pick(d, 2)} {pick(a, 3)}")
            )
        if country == "MEX":
            return f"{pick(a, 3)}-{pick(d, 3)}-{pick(a, 1)}"
        return rng.choice((f"{pick(d, 1)}{pick(a, 3)}{pick(d, 3)}", f"{pick(a, 3)}-{pick(d, 4)}"))

    def vehicle(self) -> Record:
        rng = self.rng
        wmi, make, models = rng.choice(_VEHICLES)
        year = rng.randint(2005, 2026)
        country = rng.choices(("CAN", "USA", "MEX"), (4, 5, 1))[0]
        return {
            "record": self.meta("V"),
            "vin": make_vin(wmi, year, rng),
            "plate": self.plate(country),
            "plate_country": country,
            "make": make,
            "model": rng.choice(models),
            "colour": rng.choice(_COLOURS),
            "year": year,
        }

    def vessel(self) -> Record:
        rng = self.rng
        flag = rng.choice(list(_FLAGS))
        mids, calls = _FLAGS[flag]
        kind = rng.choice(_VESSEL_TYPES)
        name = f"{rng.choice(_VESSEL_WORDS[0])} {rng.choice(_VESSEL_WORDS[1])}"
        while name == VESSEL["name"]:
            name = f"{rng.choice(_VESSEL_WORDS[0])} {rng.choice(_VESSEL_WORDS[1])}"
        body: Record = {
            "record": self.meta("S"),
            "mmsi": rng.choice(mids) + f"{rng.randrange(10**6):06d}",
            "name": name,
            "flag": flag,
            "call_sign": rng.choice(calls) + f"{rng.randrange(10**4):04d}",
            "vessel_type": kind,
        }
        if kind not in ("pleasure craft", "fishing vessel", "tug"):  # small craft carry no IMO
            imo = make_imo(rng)
            while imo == VESSEL["imo"]:
                imo = make_imo(rng)
            body = {"record": body["record"], "imo": imo, **body}
        return body

    def shipment(self) -> Record:
        rng = self.rng
        owner, scac = rng.choice(_CARRIERS)
        origin = rng.choice(_PORTS)
        destination = "CAN" if self.member.startswith("CA-") else "USA"
        locale = {"CHN": "zh_CN", "JPN": "ja_JP", "MEX": "es_MX", "COL": "es_MX"}.get(
            origin, "en_US"
        )
        dest_locale = "fr_CA" if destination == "CAN" and rng.random() < 0.3 else "en_CA"
        goods = rng.sample(_GOODS, rng.choice((1, 1, 1, 2)))
        return {
            "record": self.meta("C"),
            "container_number": make_container(owner, rng),
            "bill_of_lading": f"{scac}{rng.randrange(10**8, 10**10)}",
            "consignor": {"name": rng.choice(_pools(locale).companies), "country": origin},
            "consignee": {
                "name": rng.choice(
                    _pools(dest_locale if destination == "CAN" else "en_US").companies
                ),
                "country": destination,
            },
            "hs_codes": [code for code, _ in goods],
            "goods_description": "; ".join(d for _, d in goods)
            + f", {rng.randint(10, 5000)} units",
            "origin_country": origin,
            "destination_country": destination,
            "declared_value": {
                "amount": round(rng.uniform(500, 250_000), 2),
                "currency": _CURRENCIES.get(destination, "USD"),
            },
        }

    def alert(self) -> Record:
        rng = self.rng
        reason, action = rng.choice(_ALERTS)
        body: Record = {
            "record": self.meta("A"),
            "alert_id": f"{self.member}-LO-{rng.choice((2025, 2026))}-{self.serial:06d}",
            "subject_type": "person",
            "reason_category": reason,
            "handling": rng.choice(self.handling),
            "issuing_agency": self.member,
            "valid_from": "2026-01-01",
            "valid_until": "2026-12-31",
            "action": action,
        }
        if self.persons:
            source_id, person = rng.choice(self.persons)
            name = person["name"]
            body["subject_ref"] = {"entity_type": "person", "source_id": source_id}
            body["subject_summary"] = (
                f"{name['surname']}, {name['given_names'].title()}, "
                f"born {person['date_of_birth'][:4]}"
            )
        else:
            body["subject_summary"] = "unidentified subject, see case file"
        return body


def generate(
    member: str, total: int, *, seed: int = 2026, batch: int = 2000
) -> Iterator[tuple[str, list[Record]]]:
    """``member``'s records as ``(entity type, batch)``: the planted scenario records first, then
    ``total`` generated ones (people before the documents and alerts that refer to them)."""
    for entity, records in planted(member).items():
        yield entity, records
    maker = _Maker(member, seed)
    makers: dict[str, Callable[[], Record]] = {
        "person": maker.person,
        "travel_document": maker.travel_document,
        "vehicle": maker.vehicle,
        "vessel": maker.vessel,
        "shipment": maker.shipment,
        "alert": maker.alert,
    }
    counts = plan(member, total)
    order = sorted(counts, key=lambda e: (e != "person", e == "alert"))
    for entity in order:
        make = makers[entity]
        remaining = counts[entity]
        while remaining:
            n = min(batch, remaining)
            yield entity, [make() for _ in range(n)]
            remaining -= n


def planted(member: str) -> dict[str, list[Record]]:
    """The records the scenario of ``ibex demo`` asks for, by entity type."""
    meta = {"handling": HANDLING.get(member, ("H1",))[0], "updated_at": "2026-05-28T09:14:00Z"}
    if member == "US-CBP":
        traveller = {
            "record": {"source_id": "US-CBP:P-9000417", **meta},
            "name": {"given_names": "OLENA", "surname": "KOVALENKO", "script": "Latn"},
            "aliases": [{"given_names": "Олена", "surname": "Коваленко", "script": "Cyrl"}],
            "date_of_birth": TRAVELLER["date_of_birth"],
            "place_of_birth": {"city": "Kharkiv", "country": "UKR"},
            "sex": "F",
            "nationalities": ["UKR", "CAN"],
            "identifiers": [{"scheme": "passport", "value": "FE482913", "issuing_country": "UKR"}],
        }
        suspect = {
            "record": {"source_id": "US-CBP:P-9000311", **meta},
            "name": {"given_names": "KARIM", "surname": "HADDAD", "script": "Latn"},
            "aliases": [
                {"given_names": "كريم", "surname": "حداد", "script": "Arab"},
                {"full_name": "Karim Al-Haddad", "script": "Latn"},
            ],
            "date_of_birth": SUSPECT["date_of_birth"],
            "place_of_birth": {"city": "Bayrut", "country": "LBN"},
            "sex": "M",
            "nationalities": ["LBN"],
        }
        return {"person": [traveller, suspect]}
    if member == "US-USCG":
        return {
            "vessel": [
                {
                    "record": {"source_id": "US-USCG:S-9000042", **meta},
                    "imo": VESSEL["imo"],
                    "mmsi": "316001234",
                    "name": VESSEL["name"],
                    "flag": "CAN",
                    "call_sign": "CFN4821",
                    "vessel_type": "container ship",
                }
            ]
        }
    if member == "CA-CBSA":
        return {
            "travel_document": [
                {
                    "record": {"source_id": "CA-CBSA:D-9000417", **meta},
                    **DOCUMENT,
                    "document_type": "P",
                    "nationality": "CAN",
                    "holder_name": {"given_names": "JEAN-PIERRE", "surname": "TREMBLAY",
                                    "script": "Latn"},
                    "holder_date_of_birth": "1980-11-02",
                    "date_of_issue": "2021-05-10",
                    "date_of_expiry": "2031-05-09",
                    "status": "stolen",
                }
            ]
        }  # fmt: skip
    return {}
