"""Alert rules (promtool), the Grafana dashboard, and the metric names they use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from bluegreen.core.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "bluegreen.json"
METRIC = re.compile(r"\bbluegreen_[a-z0-9_]+\b")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `apt-get install prometheus` (deploy/prereqs.sh does it)"
    return path


def exported_names() -> set[str]:
    """Every sample name the registry can expose."""
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_every_alert_fires_and_clears_in_promtool_tests() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tests = yaml.safe_load((RULES.parent / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"]}
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert tested == rules
    for test in tests:  # each alert is seen firing and seen clear
        cases = test["alert_rule_test"]
        assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases)


def test_dashboard_is_valid_and_covers_the_operator_views() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "bluegreen"
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in (
        "Migration phase",
        "Reads served by",
        "Snapshot tasks by state",
        "Throughput",
        "Consumer lag per partition",
        "Latency percentiles",
        "Dead letters by step",
        "Replication slot",
    ):
        assert needed in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert p["targets"] and all(t["expr"] for t in p["targets"])
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])


def test_dashboard_and_rules_only_name_metrics_that_exist() -> None:
    exported = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for p in dashboard["panels"]
        for t in p["targets"]
        for name in METRIC.findall(t["expr"])
    }
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            used |= set(METRIC.findall(rule["expr"]))
    assert used, "no metric names found"
    assert used <= exported, sorted(used - exported)


def test_every_metric_has_help_and_follows_the_naming_rules() -> None:
    for family in Metrics().registry.collect():
        assert family.name.startswith("bluegreen_"), family.name
        assert family.documentation.strip(), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


def test_compose_provisions_grafana_with_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    prometheus = compose["services"]["prometheus"]["volumes"]
    assert any(v.startswith("./deploy/prometheus/alerts.yml") for v in prometheus)
