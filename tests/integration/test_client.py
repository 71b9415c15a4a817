"""The Python client and ``ibex query`` against a real federation on loopback.

The broker and three connectors run as gunicorn processes with real keys, SQLCipher stores and
the embedded Rego engine; the client talks to an agency's gateway exactly as the agency's own
systems would, and ``ibex query`` goes through the same client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.client import (
    GatewayClient,
    GatewayUnavailable,
    Hit,
    QueryRefused,
    QueryResult,
)
from ibex.cli import main
from ibex.demofed import DEMO_MEMBERS, LocalFederation, free_port

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "examples"
MEMBERS = tuple(m for m in DEMO_MEMBERS if m.id in {"CA-CBSA", "CA-RCMP", "US-CBP"})


def person(source_id: str) -> dict[str, Any]:
    doc = json.loads((SCHEMAS / "person" / "valid-full.json").read_text())
    doc["record"]["source_id"] = source_id
    return dict(doc)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    fed = LocalFederation(tmp_path_factory.mktemp("client"), members=MEMBERS)
    fed.create()
    fed.seed("US-CBP", "person", [person("CBP-P-1")])
    with fed.running():
        yield fed


def client(fed: LocalFederation, member: str) -> GatewayClient:
    node = fed.nodes[member]
    assert node.token is not None
    return GatewayClient(node.url, node.token.read_text(), timeout=20.0)


CRITERIA = {"name.surname": "Kovalenko", "name.given_names": "Olena", "date_of_birth": "1987-03-14"}
SCREENING: dict[str, Any] = {
    "officer": "cbsa-officer-17",
    "purpose": "border_screening",
    "legal_basis": "us_19_usc_1628",
    "jurisdiction": "CA",
    "subject_type": "person",
    "criteria": CRITERIA,
    "requested_fields": ["name", "date_of_birth", "nationalities", "sex"],
}
INVESTIGATION: dict[str, Any] = {
    **SCREENING,
    "officer": "rcmp-officer-3",
    "purpose": "criminal_investigation",
    "case_reference": "RCMP-2026-117",
    "seriousness": "serious",
    "requested_fields": ["name", "date_of_birth", "nationalities"],
}


# --- the client --------------------------------------------------------------------------------


def test_full_query_gives_typed_verified_results(fed: LocalFederation) -> None:
    with client(fed, "CA-CBSA") as gw:
        result = gw.query(**SCREENING, mode="full", targets=["US-CBP", "CA-RCMP"])
    assert isinstance(result, QueryResult)
    cbp = result.target("US-CBP")
    assert (cbp.status, cbp.verification) == ("answered", "verified")
    assert cbp.agency == "U.S. Customs and Border Protection"
    assert cbp.decision is not None and cbp.decision.allow
    assert cbp.decision.agreement == "US-CBP--CA-CBSA--screening-2026"
    assert cbp.decision.withheld == ("sex",)
    [rec] = cbp.records
    assert set(rec.record) == {"name", "date_of_birth", "nationalities"}
    assert "name_exact" in rec.rules and rec.handling
    rcmp = result.target("CA-RCMP")
    assert rcmp.status == "denied" and not rcmp.records and not rcmp.hits
    assert rcmp.reasons and all(r.rule and r.text for r in rcmp.reasons)
    assert result.records == (rec,)
    # Frozen values: an agency system cannot edit what a partner said by accident.
    with pytest.raises(AttributeError):
        cbp.status = "denied"  # type: ignore[misc]


def test_hit_then_follow_up(fed: LocalFederation) -> None:
    with client(fed, "CA-RCMP") as gw:
        first = gw.query(**INVESTIGATION, targets=["US-CBP"])
        [hit] = first.hits
        assert isinstance(hit, Hit) and hit.target == "US-CBP" and hit.query_id == first.query_id
        assert first.target("US-CBP").records == ()

        unconfirmed = gw.follow_up(first, officer_confirmed=False)
        assert unconfirmed.target("US-CBP").status == "denied"

        full = gw.follow_up(hit, officer_confirmed=True)
    cbp = full.target("US-CBP")
    assert cbp.status == "answered" and cbp.decision is not None
    assert cbp.decision.mode == "full"
    [rec] = cbp.records
    assert rec.record["date_of_birth"] == "1987-03-14"
    assert rec.rules == ("hit_reference",)


def test_refusals_raise_with_the_problem_code(fed: LocalFederation, tmp_path: Path) -> None:
    # The gateway refuses: a bad token, then a request that breaks its schema.
    node = fed.nodes["CA-CBSA"]
    with GatewayClient(node.url, "not-the-token") as gw, pytest.raises(QueryRefused) as bad:
        gw.query(**SCREENING)
    assert (bad.value.problem_code, bad.value.http_status) == ("forbidden", 403)
    assert bad.value.refused_by == "gateway"
    with client(fed, "CA-CBSA") as gw:
        with pytest.raises(QueryRefused) as invalid:
            gw.query(**{**SCREENING, "purpose": "Border Screening"})
        assert invalid.value.problem_code == "schema-invalid"
        assert [e.pointer for e in invalid.value.errors] == ["/purpose"]
        # The broker refuses (a field no schema has), and the gateway passes its code on.
        with pytest.raises(QueryRefused) as broker:
            gw.query(**{**SCREENING, "requested_fields": ["name", "shoe_size"]})
    assert broker.value.refused_by == "broker"
    assert broker.value.problem_code == "fields-unknown"
    assert broker.value.query_id
    assert "fields-unknown" in broker.value.diagnostics()
    # Nobody listening.
    with (
        GatewayClient(f"http://127.0.0.1:{free_port()}", "t") as gone,
        pytest.raises(GatewayUnavailable),
    ):
        gone.query(**SCREENING)


# --- ibex query ----------------------------------------------------------------------------


def cli_args(fed: LocalFederation, member: str, *extra: str) -> list[str]:
    return [
        "query",
        "--config",
        str(fed.nodes[member].config),
        "--officer",
        "cbsa-officer-17",
        "--purpose",
        "border_screening",
        "--legal-basis",
        "us_19_usc_1628",
        "--jurisdiction",
        "CA",
        "--type",
        "person",
        *extra,
    ]


PERSON_ARGS = (
    "--criteria",
    "name.surname=Kovalenko",
    "--criteria",
    "name.given_names=Olena",
    "--criteria",
    "date_of_birth=1987-03-14",
)


def test_cli_prints_a_table(fed: LocalFederation, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli_args(
        fed,
        "CA-CBSA",
        *PERSON_ARGS,
        "--request",
        "name,date_of_birth",
        "--request",
        "nationalities,sex",
        "--mode",
        "full",
        "--target",
        "US-CBP",
        "--target",
        "CA-RCMP",
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    header, cbp_row, rcmp_row = out.split("\n\n")[1].splitlines()
    assert header.split()[:3] == ["TARGET", "STATUS", "AGENCY"]
    assert cbp_row.split()[:2] == ["US-CBP", "answered"]
    assert "US-CBP--CA-CBSA--screening-2026" in cbp_row and "1 record" in cbp_row
    assert rcmp_row.split()[:2] == ["CA-RCMP", "denied"]
    assert "withheld: sex" in out
    assert "name.surname: KOVALENKO" in out
    assert "verification: verified" in out
    assert "reason [" in out


def test_cli_json_and_follow_up(fed: LocalFederation, capsys: pytest.CaptureFixture[str]) -> None:
    investigation = (
        "--purpose",
        "criminal_investigation",
        "--case-reference",
        "RCMP-2026-117",
        "--seriousness",
        "serious",
        "--request",
        "name,date_of_birth",
        "--target",
        "US-CBP",
        "--json",
    )
    # argparse keeps the last --purpose: the investigation's.
    assert main(cli_args(fed, "CA-RCMP", *PERSON_ARGS, *investigation)) == 0
    first = json.loads(capsys.readouterr().out)
    [result] = first["results"]
    assert result["status"] == "answered" and result["records"] == []
    [hit] = result["hits"]
    follow = (
        "--follow-up",
        hit["reference"],
        "--previous-query-id",
        first["query_id"],
        "--confirm",
    )
    assert main(cli_args(fed, "CA-RCMP", *investigation, *follow)) == 0
    second = json.loads(capsys.readouterr().out)
    [result] = second["results"]
    assert result["status"] == "answered", result
    [rec] = result["records"]
    assert set(rec["record"]) == {"name", "date_of_birth"}


def test_cli_exit_statuses(
    fed: LocalFederation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1: refused (by the broker: an unknown field), with the code on stderr and in the JSON.
    args = cli_args(fed, "CA-CBSA", *PERSON_ARGS, "--request", "shoe_size", "--json")
    assert main(args) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["refused"]["code"] == "fields-unknown"
    assert "fields-unknown" in captured.err
    # 2: usage — no criteria; a follow-up without its one target; a malformed criterion.
    assert main(cli_args(fed, "CA-CBSA")) == 2
    assert main(cli_args(fed, "CA-CBSA", "--follow-up", "x" * 43)) == 2
    assert main(cli_args(fed, "CA-CBSA", "--criteria", "Petrenko")) == 2
    err = capsys.readouterr().err
    assert "--criteria" in err and "Petrenko" not in err  # a value is never echoed
    with pytest.raises(SystemExit) as usage:
        main(cli_args(fed, "CA-CBSA", *PERSON_ARGS, "--mode", "everything"))
    assert usage.value.code == 2
    # 2: configuration — a connector whose gateway is disabled.
    text = fed.nodes["CA-CBSA"].config.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("gateway_token_file")]
    config = tmp_path / "no-gateway.toml"
    config.write_text("\n".join(lines) + "\n")
    args = cli_args(fed, "CA-CBSA", *PERSON_ARGS)
    args[args.index("--config") + 1] = str(config)
    assert main(args) == 2
    assert "gateway_token_file" in capsys.readouterr().err
