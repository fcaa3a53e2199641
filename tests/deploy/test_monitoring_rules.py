"""The monitoring shipped in deploy/: Prometheus' alert rules and the Grafana dashboard.

promtool (Debian's prometheus package, installed by devstack/bootstrap.sh) checks the rules and runs
unit tests of the alerts whose expressions hold a trap (-1 meaning "never" or "no answer"). Every
metric an alert or a panel reads must be in a real `/metrics` answer of the web server after a real
issuance, so that a renamed or misspelt metric cannot leave an alert silent forever.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from tests.integration.polling import issued, unique_name, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "certwright-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "certwright.json"

METRIC = re.compile(r"\bcertwright_[a-z0-9_]+")
# name{label="value", ...}: the equality matchers only (=~, != and !~ select no single value).
SELECTOR = re.compile(r"\b(certwright_[a-z0-9_]+)\{([^}]*)\}")
EQUALITY = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
# Labels Prometheus adds at scrape time: no scrape has them (the dashboard selects job by a variable).
SCRAPE_LABELS = {"job", "instance"}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SEVERITIES = {"critical", "warning"}


def promtool() -> str:
    path = shutil.which("promtool")
    # Not a skip: CI runs devstack/bootstrap.sh first, which installs it.
    assert path, "promtool is missing: run devstack/bootstrap.sh (it installs Debian's prometheus package)"
    return path


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_expressions() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its variables' queries."""
    expressions = [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            expressions.append(query["query"] if isinstance(query, dict) else query)
    return expressions


def alert_expressions() -> list[str]:
    return [rule["expr"] for rule in alert_rules()]


def test_promtool_accepts_the_alert_rules():
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_has_a_for_a_severity_and_a_summary_and_description():
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert rule.get("alert"), f"a recording rule in an alerts file: {rule}"
        assert rule.get("for"), f"{rule['alert']} fires on a single scrape"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        assert {"summary", "description"} <= set(rule.get("annotations", {})), rule["alert"]


def series(name: str, labels: str, values: str) -> dict[str, str]:
    """An input series of promtool's unit tests, scraped by job "certwright"."""
    return {"series": f'{name}{{job="certwright",{labels}}}', "values": values}


def fires(time: str, alert: str, **labels: str) -> dict:
    """At `time`, `alert` fires once, with these labels (and job "certwright"), or not at all when
    none are given."""
    expected = [{"exp_labels": {"job": "certwright", **labels}}] if labels else []
    return {"eval_time": time, "alertname": alert, "exp_alerts": expected}


def promtool_test(tmp_path: Path, rules: dict, tests: list[dict]) -> subprocess.CompletedProcess:
    """promtool's unit tests (its own format) of `rules`, evaluated every minute."""
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    cases = tmp_path / "rules.test.yml"
    cases.write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False
        )
    )
    return subprocess.run(
        [promtool(), "test", "rules", str(cases)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


HEARTBEAT = "certwright_heartbeat_age_seconds"
QUEUE = "certwright_queue_length"
BREAKER = "certwright_issuer_breaker_open"
# Values every minute, in promtool's notation: "-1x10" is -1 eleven times, "30+60x10" 30, 90, ... 630.
THRESHOLD_CASES = [
    # A heartbeat never seen (-1) is stale; a standby beat never seen is no alert (none may run).
    {
        "interval": "1m",
        "input_series": [
            series(HEARTBEAT, 'source="beat"', "-1x10"),
            series(HEARTBEAT, 'source="worker"', "20x10"),
            series(HEARTBEAT, 'source="beat_standby"', "-1x10"),
        ],
        "alert_rule_test": [
            fires("5m", "CertwrightBeatHeartbeatStale", severity="critical", source="beat"),
            fires("5m", "CertwrightWorkerHeartbeatStale"),
        ],
    },
    # Older than 5 minutes from 5m on (330 s), for 2 minutes: firing at 7m, not before.
    {
        "interval": "1m",
        "input_series": [series(HEARTBEAT, 'source="worker"', "30+60x10")],
        "alert_rule_test": [
            fires("6m", "CertwrightWorkerHeartbeatStale"),
            fires("7m", "CertwrightWorkerHeartbeatStale", severity="critical", source="worker"),
        ],
    },
    # The broker not answering (-1 on every queue) is one alert, and no backlog.
    {
        "interval": "1m",
        "input_series": [series(QUEUE, f'queue="{queue}"', "-1x10") for queue in ("dns", "acme", "default")],
        "alert_rule_test": [
            fires("5m", "CertwrightBrokerUnreachable", severity="critical"),
            fires("5m", "CertwrightQueueBacklogHigh"),
        ],
    },
    {
        "interval": "1m",
        "input_series": [series(QUEUE, 'queue="acme"', "5000x20"), series(QUEUE, 'queue="dns"', "3x20")],
        "alert_rule_test": [
            fires("16m", "CertwrightQueueBacklogHigh", severity="warning", queue="acme"),
            fires("16m", "CertwrightBrokerUnreachable"),
        ],
    },
    # A half-open breaker is not open, but no closed issuer left is the critical one.
    {
        "interval": "1m",
        "input_series": [
            series(BREAKER, 'issuer="letsencrypt"', "0.5x20"),
            series(BREAKER, 'issuer="second"', "1x20"),
        ],
        "alert_rule_test": [
            fires("15m", "CertwrightIssuerBreakerOpen", severity="warning", issuer="second"),
            fires("15m", "CertwrightNoIssuerAvailable", severity="critical"),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            series(BREAKER, 'issuer="letsencrypt"', "0.5x20"),
            series(BREAKER, 'issuer="second"', "0x20"),
        ],
        "alert_rule_test": [
            fires("15m", "CertwrightIssuerBreakerOpen"),
            fires("15m", "CertwrightNoIssuerAvailable"),
        ],
    },
    # A target that answers nothing: its up is 0 and its metrics are gone.
    {
        "interval": "1m",
        "input_series": [{"series": 'up{job="certwright",instance="web:8000"}', "values": "0x10"}],
        "alert_rule_test": [
            fires("10m", "CertwrightScrapeFailing", severity="critical", instance="web:8000"),
            fires("10m", "CertwrightMetricsAbsent", severity="critical"),
        ],
    },
]


def without_annotations(rules: dict) -> dict:
    """The rules with no annotations: promtool compares them whole, and these cases pin labels only."""
    return {
        "groups": [
            {
                **group,
                "rules": [{k: v for k, v in rule.items() if k != "annotations"} for rule in group["rules"]],
            }
            for group in rules["groups"]
        ]
    }


def test_alerts_read_minus_one_as_never_seen_or_broker_down_and_half_open_as_not_open(tmp_path):
    rules = without_annotations(yaml.safe_load(RULES.read_text()))
    result = promtool_test(tmp_path, rules, THRESHOLD_CASES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_beat_alert_says_never_when_beat_was_never_seen(tmp_path):
    case = {
        "interval": "1m",
        "input_series": [series(HEARTBEAT, 'source="beat"', "-1x10")],
        "alert_rule_test": [
            {
                "eval_time": "5m",
                "alertname": "CertwrightBeatHeartbeatStale",
                "exp_alerts": [
                    {
                        "exp_labels": {"job": "certwright", "source": "beat", "severity": "critical"},
                        "exp_annotations": {
                            "summary": "Celery beat has sent no task for 5 minutes",
                            "description": "The leading beat last sent a task never. Without beat nothing is"
                            " checked, ordered or renewed, and nothing fails either: certificates just lapse."
                            " Check the beat processes and /healthz (beat_leader).",
                        },
                    }
                ],
            }
        ],
    }
    result = promtool_test(tmp_path, yaml.safe_load(RULES.read_text()), [case])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_each_have_the_prometheus_variable_as_datasource_and_a_query():
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = board["panels"]
    assert panels
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel.get("datasource") == source, panel["title"]
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == source, panel["title"]
            assert target.get("expr", "").strip(), panel["title"]


def test_dashboard_expressions_are_valid_promql(tmp_path):
    # promtool parses expressions only inside rules: each one becomes a recording rule, with
    # Grafana's variables given values.
    grafana = {"$__rate_interval": "5m", "$job": "certwright"}
    rules = []
    for index, expression in enumerate(panel_expressions()):
        if expression.startswith("label_values("):
            continue
        for variable, value in grafana.items():
            expression = expression.replace(variable, value)
        rules.append({"record": f"dashboard:expression_{index}", "expr": expression})
    path = tmp_path / "dashboard-expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def scrape_metrics() -> tuple[str, dict[str, list[dict[str, str]]]]:
    """The web server's `/metrics` (with the bearer token when METRICS_TOKEN is set), and each sample
    name's label sets."""
    request = urllib.request.Request(f"http://127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}/metrics")
    if settings.METRICS_TOKEN:
        request.add_header("Authorization", f"Bearer {settings.METRICS_TOKEN}")
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode()
    samples: dict[str, list[dict[str, str]]] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not exposition format: {line!r}"
        samples.setdefault(match[1], []).append(dict(LABEL.findall(match[2] or "")))
    return body, samples


def selected_values(expressions: list[str]) -> set[tuple[str, str, str]]:
    """(metric, label, value) of every equality matcher on a Certwright metric."""
    return {
        (name, label, value)
        for expression in expressions
        for name, matchers in SELECTOR.findall(expression)
        for label, value in EQUALITY.findall(matchers)
        if label not in SCRAPE_LABELS
    }


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_every_metric_and_label_value_the_alerts_and_dashboard_select_is_in_a_scrape_after_an_issuance(
    issuance_stack, challtestsrv, app, web_server
):
    issued(challtestsrv, app, unique_name())
    expressions = alert_expressions() + panel_expressions()
    # Histograms are exposed as <name>_bucket, _sum and _count: the expressions name those, and so
    # must the scrape's samples, as they are.
    wanted = {name for expression in expressions for name in METRIC.findall(expression)}
    assert wanted

    def missing() -> set[str]:
        return wanted - set(scrape_metrics()[1])

    # A worker records its observations a moment after the domain is served.
    wait_for(
        lambda: not missing(),
        timeout=10,
        interval=0.5,
        what="every metric the alerts and the dashboard use in /metrics",
        describe=lambda: f"missing {sorted(missing())}",
    )
    body, samples = scrape_metrics()

    for name in wanted:
        if name.endswith("_bucket"):
            family = name.removesuffix("_bucket")
            assert f"# TYPE {family} histogram" in body, f"histogram_quantile over {name}, not a histogram"

    absent = {
        (name, label, value)
        for name, label, value in selected_values(expressions)
        if not any(labels.get(label) == value for labels in samples.get(name, []))
    }
    assert not absent, (
        f"selected by the alerts or the dashboard, no such series in /metrics: {sorted(absent)}"
    )
