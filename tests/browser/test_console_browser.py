"""The web console in headless Chromium, against a real broker under gunicorn.

The broker is started by the same machinery as ``ibex demo`` (``LocalFederation.start``), with
its audit log holding a few days of decisions and disclosures, three console users and a
candidate policy checkout on disk. A legal officer simulates a query and reads the reasons,
proposes the candidate and is refused when activating it alone; a second officer approves and
activates it; oversight browses the audit log and checks an inclusion proof; the transparency
charts render. Every page under test is saved as a screenshot under ``test-output/console/``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from broker.services import audit_origin
from broker.users import UserStore
from ibex.auditentry import new_entry
from ibex.auditlog import AuditLog
from ibex.config import BrokerConfig, load_config
from ibex.demofed import DEFAULT_POLICIES, LocalFederation
from ibex.keys import MemberKeys
from ibex.store import load_db_key, open_encrypted

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "console"
PASSWORD = "a long enough test password"
TS = "%Y-%m-%dT%H:%M:%S.000Z"
USERS = {"alice": "legal-officer", "bob": "legal-officer", "olga": "oversight"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


def seed_audit(config: BrokerConfig) -> None:
    """Decisions and disclosures over the last four days, as the intake records them (enough of
    each for the charts to show; one rare purpose stays below the suppression threshold)."""
    key = load_db_key(config.db_key_file, config.db_key_env)
    keys = MemberKeys.load(config.keys_dir, config.broker_id)
    log = AuditLog(
        config.data_dir / "audit.db",
        key,
        origin=audit_origin(config),
        signing_key=keys.signing_key,
        create=True,
    )
    today = dt.datetime.now(dt.UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    plan = [  # requester, target, purpose, legal basis, allowed, queries a day
        ("US-CBP", "CA-CBSA", "border_screening", "ca_customs_act_s107", True, 8),
        ("US-CBP", "CA-RCMP", "border_screening", "ca_customs_act_s107", False, 6),
        ("CA-CBSA", "US-CBP", "border_screening", "us_19_usc_1628", True, 7),
        ("CA-CBSA", "US-CBP", "customs_enforcement", "us_19_usc_1628", True, 2),
        ("CA-RCMP", "US-USCG", "maritime_security", "ca_us_shiprider", True, 1),
    ]
    entries: list[dict[str, Any]] = []
    for day in range(4):
        at = today - dt.timedelta(days=day)
        for requester, target, purpose, basis, allow, count in plan:
            for n in range(count):
                qid = str(uuid.uuid4())
                stamp = (at + dt.timedelta(minutes=n)).strftime(TS)
                intake = new_entry(
                    "intake",
                    retention_days=730,
                    query_id=qid,
                    requester=requester,
                    officer="officer-7",
                    purpose=purpose,
                    legal_basis=basis,
                    subject_type="person",
                    mode="full",
                    criteria_fields=["date_of_birth", "name.surname"],
                    requested_fields=["date_of_birth", "name"],
                    targets=[target],
                    jurisdiction=requester[:2],
                    schema_version="1.0",
                    follow_up=False,
                    officer_confirmed=False,
                )
                entries.append(intake | {"time": stamp})
                decision: dict[str, Any] = {
                    "allow": allow,
                    "mode": "full" if allow else "none",
                    "fields": ["date_of_birth", "name"] if allow else [],
                    "withheld": [] if allow else ["date_of_birth", "name"],
                    "rule_ids": ["allow.agreement"] if allow else ["agreement.none"],
                    "policy_digest": "sha256:" + "0" * 64,
                }
                entries.append(
                    new_entry(
                        "decision",
                        retention_days=730,
                        query_id=qid,
                        requester=requester,
                        purpose=purpose,
                        subject_type="person",
                        target=target,
                        decision=decision,
                    )
                    | {"time": stamp}
                )
                if allow:
                    disclosure = {"record_count": 1 if n % 3 else 0, "fields_released": ["name"]}
                    entries.append(
                        new_entry(
                            "disclosure",
                            retention_days=730,
                            query_id=qid,
                            requester=requester,
                            target=target,
                            disclosure=disclosure,
                        )
                        | {"time": stamp}
                    )
    for member in ("CA-CBSA", "CA-RCMP", "US-CBP", "US-USCG", "MX-INM"):
        details = {"action": "add", "federation_version": 1}
        membership = new_entry(
            "membership", retention_days=730, actor="operator", target=member, details=details
        )
        entries.append(membership | {"time": (today - dt.timedelta(days=5)).strftime(TS)})
    order = ("membership", "intake", "decision", "disclosure")
    entries.sort(key=lambda e: (str(e["time"]), order.index(e["kind"])))
    try:
        log.append_many(entries)
        log.sign_checkpoint()
    finally:
        log.close()


def add_users(config: BrokerConfig) -> None:
    conn = open_encrypted(
        config.data_dir / "broker.db", load_db_key(config.db_key_file, config.db_key_env)
    )
    try:
        users = UserStore(conn, cost="interactive")
        for name, role in USERS.items():
            users.add(name, role, PASSWORD)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("console-browser")
    fed = LocalFederation(root / "fed")
    fed.create()
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    seed_audit(config)
    add_users(config)
    candidate = root / "candidate"
    shutil.copytree(DEFAULT_POLICIES, candidate, ignore=shutil.ignore_patterns("*_test.rego"))
    agreement = candidate / "agreements" / "CA-CBSA--US-CBP--screening-2026.yaml"
    text = agreement.read_text()
    screening = "    person: [name, date_of_birth, nationalities, sex, identifiers]\n"
    assert "retention_days: 365" in text and text.count(screening) == 1
    text = text.replace("retention_days: 365", "retention_days: 180")
    agreement.write_text(
        text.replace(screening, "    person: [name, nationalities, sex, identifiers]\n")
    )
    fed.start(["broker"])
    try:
        yield fed.nodes["broker"].url, candidate
    finally:
        fed.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, java_script_enabled=False
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(page: Any, url: str, name: str) -> None:
    page.goto(f"{url}/console/")
    assert page.url.startswith(f"{url}/console/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    header = page.locator("header .who")
    assert name in header.inner_text()
    assert USERS[name] in header.inner_text()


def logout(page: Any) -> None:
    page.click("header .who button")
    assert "You are logged out." in page.locator("main").inner_text()


def test_legal_officer_runs_the_simulator_and_reads_the_reasons(
    broker: tuple[str, Path], page: Any
) -> None:
    url, _ = broker
    page.goto(f"{url}/console/login")
    shot(page, "01-login")
    login(page, url, "alice")
    assert page.locator("h1").inner_text() == "Federation"
    assert page.locator("table").first.locator("tbody tr").count() == 5
    shot(page, "02-federation")
    page.click("nav >> text=Agreements")
    assert page.locator("tbody tr").count() >= 10
    shot(page, "03-agreements")
    page.click("text=CBSA to CBP, traveller and document screening at the land border")
    assert "Legal bases" in page.locator("main").inner_text()
    shot(page, "04-agreement")

    page.click("nav >> text=Simulator")
    page.select_option("#requester", "US-CBP")
    page.select_option("#purpose", "border_screening")
    page.select_option("#legal_basis", "ca_customs_act_s107")
    page.fill("#jurisdiction", "US")
    page.fill("#criteria_fields", "name.surname, date_of_birth")
    page.fill("#requested_fields", "name, date_of_birth, aliases")
    page.click("form.grid button[type=submit]")
    shot(page, "05-simulator")
    cbsa = page.locator("section.reasons", has=page.locator("h3", has_text="CA-CBSA"))
    reasons = cbsa.locator("span.reason").all_inner_texts()
    assert any(
        r.startswith("Allowed under agreement CA-CBSA--US-CBP--screening-2026") for r in reasons
    )
    assert any("aliases is withheld" in r for r in reasons)
    mx = page.locator("section.reasons", has=page.locator("h3", has_text="MX-INM"))
    assert "denied" in mx.locator("h3").inner_text()
    assert mx.locator("span.reason").count() >= 1


def test_two_person_rule_for_policy_bundles(broker: tuple[str, Path], page: Any) -> None:
    url, candidate = broker
    login(page, url, "alice")
    page.click("nav >> text=Impact")
    page.fill("#path", str(candidate))
    page.click("form.grid button[type=submit]")
    main = page.locator("main").inner_text()
    assert "Agreement terms that differ" in main
    group = page.locator("table", has_text="Fewer fields").locator("tbody tr").first.inner_text()
    assert group.startswith("CA-CBSA") and "border screening" in group
    assert page.locator("table.changes tbody tr").count() == 32  # 8 a day for four days
    shot(page, "06-impact")

    page.click("nav >> text=Policy bundles")
    page.fill("#path", str(candidate))
    page.fill("#note", "Shorter retention for screening results")
    page.get_by_role("button", name="Propose", exact=True).click()
    assert "The bundle was proposed" in page.locator("main").inner_text()
    row = page.locator("table.bundles tbody tr").first
    assert "proposed" in row.inner_text()
    row.locator("button", has_text="Activate").click()
    alert = page.locator("p.notice.error")
    assert alert.inner_text().startswith("Two-person rule:")
    assert "cannot activate it" in alert.inner_text()
    shot(page, "07-bundles-refused")
    logout(page)

    login(page, url, "bob")
    page.click("nav >> text=Policy bundles")
    row = page.locator("table.bundles tbody tr").first
    row.locator("button", has_text="Approve").click()
    assert "The bundle was approved" in page.locator("main").inner_text()
    page.locator("table.bundles tbody tr").first.locator("button", has_text="Activate").click()
    assert "The bundle is now active" in page.locator("main").inner_text()
    row = page.locator("table.bundles tbody tr").first
    assert "active" in row.inner_text() and "bob" in row.inner_text()
    shot(page, "08-bundles-activated")
    page.click("nav >> text=Agreements")
    page.click("text=CBSA to CBP, traveller and document screening at the land border")
    assert "at most 180 days" in page.locator("main").inner_text()


def test_oversight_browses_the_audit_log(broker: tuple[str, Path], page: Any) -> None:
    url, _ = broker
    login(page, url, "olga")
    page.click("nav >> text=Audit")
    assert "signature verified" in page.locator("section.checkpoint").inner_text()
    assert page.locator("table.audit tbody tr").count() == 50
    shot(page, "09-audit")
    page.select_option("#kind", "membership")
    page.click("form.filters button[type=submit]")
    rows = page.locator("table.audit tbody tr").all_inner_texts()
    assert len(rows) == 5 and all("membership" in r and "operator" in r for r in rows)
    shot(page, "10-audit-filtered")
    page.select_option("#kind", "decision")
    page.select_option("#target", "CA-RCMP")
    page.click("form.filters button[type=submit]")
    first = page.locator("table.audit tbody tr").first
    assert "CA-RCMP" in first.inner_text() and "denied" in first.inner_text()
    first.locator("a").click()
    assert page.locator("h1").inner_text().startswith("Audit entry")
    assert page.locator("p.notice.ok").inner_text().startswith("Verified:")
    shot(page, "11-audit-entry")


def test_transparency_charts_render(broker: tuple[str, Path], page: Any) -> None:
    url, _ = broker
    login(page, url, "olga")
    page.click("nav >> text=Transparency")
    chart = page.locator("svg#chart-purpose")
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 50
    assert chart.locator("rect").count() >= 3
    assert page.locator("svg#chart-hits polyline").count() >= 1
    table = page.locator("table.figures").first.inner_text()
    assert "maritime security" in table and "fewer than 5" in table and "hidden" in table
    shot(page, "12-transparency")
