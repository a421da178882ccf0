"""The Prometheus alerting rules and the Grafana dashboard in deploy/: promtool accepts the
rules and their unit tests, every dashboard query parses, and every metric the rules and the
dashboard name is one that Switchboard exports (an API on RabbitMQ, for the dead-letter gauge,
and a worker serving its own registry, for every instrument the workers record)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, Stack, free_port, rabbitmq_vhost, wait_for

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "switchboard.json"

METRIC_NAME = re.compile(r"\bswitchboard_[a-z0-9_]+\b")
# The sample names each kind of family exposes (the _created samples are not queried).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# Grafana's interval variables, as a Prometheus server would see them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make install` provides it (Debian's prometheus)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


def names_in(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC_NAME.findall(expr)}


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_has_a_duration_a_severity_and_its_annotations() -> None:
    rules = alert_rules()
    assert len(rules) >= 7
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description", "runbook"}, rule["alert"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Each query as a recording rule: promtool parses them as Prometheus would."""
    rules = []
    for index, expr in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    recorded = tmp_path / "dashboard_queries.yml"
    recorded.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(recorded))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    datasources = {json.dumps(panel["datasource"]) for panel in dashboard_panels()}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${DS_PROMETHEUS}"})}


def exported_names(text: str) -> tuple[set[str], dict[str, str]]:
    """The sample names a scrape can hold (those of families with no sample yet included),
    and the switchboard families in it with their types."""
    samples: set[str] = set()
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        samples.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        samples.update(sample.name for sample in family.samples)
        # The text format shows a counter's or histogram's _created sample as a gauge of its own.
        if family.name.startswith("switchboard_") and not family.name.endswith("_created"):
            families[family.name] = family.type
    return samples, families


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A RabbitMQ virtual host of its own; requested before ``make_stack``, so it outlives the
    stack. On RabbitMQ the API exports the dead-letter gauge (not on Redis)."""
    with rabbitmq_vhost() as url:
        yield url


def test_the_rules_and_the_dashboard_use_only_exported_metrics(
    broker_url: str, make_stack: Any
) -> None:
    stack: Stack = make_stack(broker_url=broker_url, workers=0, beat=False)
    # A worker without the multiprocess directory serves its own registry, where every
    # instrument the workers record is described before anything is recorded.
    port = free_port()
    env = stack.env()
    env["SWITCHBOARD_WORKER_METRICS_PORT"] = str(port)
    worker = stack.start_worker(name="metrics", env=env, concurrency=1)

    def worker_metrics() -> str | None:
        assert worker.poll() is None, "the worker exited"
        try:
            return scrape(f"http://127.0.0.1:{port}/metrics")
        except httpx.HTTPError:
            return None

    api_samples, api_families = exported_names(scrape(stack.api_url + "/metrics"))
    worker_text = wait_for(worker_metrics, 30, what="the worker's /metrics")
    worker_samples, worker_families = exported_names(worker_text)

    assert "switchboard_dead_lettered_messages" in api_samples
    assert "switchboard_dial_seconds_bucket" in worker_samples
    exported = api_samples | worker_samples
    used_by_rules = names_in([str(rule["expr"]) for rule in alert_rules()])
    used_by_dashboard = names_in(dashboard_queries())
    assert used_by_rules and used_by_dashboard
    assert used_by_rules - exported == set()
    assert used_by_dashboard - exported == set()
    # And the dashboard shows every switchboard family there is.
    families = {**worker_families, **api_families}
    not_shown = {
        family
        for family, kind in families.items()
        if not any(family + suffix in used_by_dashboard for suffix in SUFFIXES[kind])
    }
    assert not_shown == set()
