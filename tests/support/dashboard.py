"""The metrics the Grafana dashboard (deploy/grafana/serve-app.json) queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "serve-app.json"


def dashboard_metrics() -> set[str]:
    """Every metric a query names, as Ray exports it (``ray_`` prefix, histogram suffixes dropped)."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in doc["templating"]["list"] if "definition" in v]
    names = {m for e in exprs for m in re.findall(r"\bray_serve_app_[a-z0-9_]+", e)}
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
