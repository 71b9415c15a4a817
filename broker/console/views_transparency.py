"""Transparency: counts of decisions by purpose, partner and outcome, and the hit rate over time,
as tables and server-drawn charts, with small counts suppressed (:mod:`broker.console.figures`)."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from broker.console import charts
from broker.console.auth import require, setting
from broker.console.figures import DEFAULT_K, OUTCOMES, Row, compute
from broker.services import BrokerServices
from broker.users import ROLES

PERIODS = (7, 30, 90, 365)


def _bars(chart_id: str, title: str, rows: list[Row], k: int) -> Markup:
    return charts.bar_chart(
        chart_id,
        title,
        [r.label.replace("_", " ") for r in rows],
        [charts.Series(o, [r.cells[i] for r in rows]) for i, o in enumerate(OUTCOMES)],
        k=k,
    )


def register(bp: Blueprint, svc: BrokerServices) -> None:
    @bp.get("/transparency")
    @require(*ROLES)
    def transparency() -> ResponseReturnValue:
        try:
            days = int(request.args.get("days", "30"))
        except ValueError:
            days = 30
        if days not in PERIODS:
            days = 30
        k = max(2, int(setting("IBEX_CONSOLE_SUPPRESS_BELOW", DEFAULT_K)))
        figs = compute(svc.audit, days=days, k=k)
        return render_template(
            "transparency.html",
            figs=figs,
            days=days,
            periods=PERIODS,
            outcomes=OUTCOMES,
            purpose_chart=_bars("chart-purpose", "Decisions by purpose", figs.by_purpose, k),
            partner_chart=_bars("chart-partner", "Decisions by partner", figs.by_partner, k),
            hit_chart=charts.line_chart(
                "chart-hits",
                "Hit rate of answered queries",
                [(day, rate) for day, _, _, rate in figs.hit_days],
                k=k,
            ),
        )
