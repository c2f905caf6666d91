"""The shipped Grafana dashboard's queries (config/grafana/rackpower-dashboard.json), for the
dashboard's static test and for running them on a real prometheus server."""
from __future__ import annotations

import json

from helpers import REPO

DASHBOARD = REPO / "config" / "grafana" / "rackpower-dashboard.json"

__all__ = ["DASHBOARD", "dashboard", "dashboard_queries", "panels"]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    """Every panel but the rows."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries(rack: str, component: str, rate_interval: str = "1m"
                      ) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query, with the dashboard's variables filled in."""
    values = {"$__rate_interval": rate_interval, "$rack": rack, "$component": component}
    out = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in values.items():
                expr = expr.replace(name, value)
            out.append((panel["title"].replace("$component", component), expr))
    return out
