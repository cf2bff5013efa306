"""The Grafana dashboard asks only for metrics the app defines (the integration tier checks they are exported)."""

from __future__ import annotations

import re

from tests.support.dashboard import REPO, dashboard_metrics


def test_every_query_names_a_metric_the_app_defines():
    defined = set(re.findall(r'"(serve_app_[a-z0-9_]+)"', (REPO / "serve_app" / "metrics.py").read_text()))
    used = {n.removeprefix("ray_") for n in dashboard_metrics()}
    assert used and used <= defined
    # And every metric the app defines has a panel.
    assert defined <= used
