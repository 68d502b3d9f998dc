"""`opsconsole metrics` and the Prometheus side: the exposition, the exporter's life while the
database comes and goes, the alert rules (promtool), and a real Prometheus and Alertmanager paging a
local webhook."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from opsconsole.cli import main
from opsconsole.db import migrate
from opsconsole.db.embedded import EmbeddedServer
from opsconsole.exporter import HealthCollector, alert_rules_yaml, parse_listen
from opsconsole.ops import health
from opsconsole.ops import pipeline as ops
from tests.health_helpers import fail_critical_dq_rule, stage

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "prometheus"
SRC = ROOT / "src"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")
NO_PROMTOOL = "promtool is not installed (Debian package `prometheus`; .ci/run installs it as root)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_for(what: str, probe, timeout: float = 30.0, every: float = 0.25):
    """probe() until it returns something truthy without raising; fail saying `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (OSError, ValueError, KeyError, IndexError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout} s (last: {last!r})")


@contextlib.contextmanager
def running(args: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def exporter(dsn: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`opsconsole metrics` in a process of its own on a free localhost port; yields its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = [sys.executable, "-m", "opsconsole.cli", "--dsn", dsn, "metrics", "--listen", f"127.0.0.1:{port}"]
    with running(args, env=env) as proc:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for("the exporter answers", lambda: proc.poll() is None and http_get(url), timeout=30)
        yield url, proc


def samples(text: str) -> dict[str, float]:
    """name{labels} -> value for every sample of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


# -- the exposition ---------------------------------------------------------------------------------


def test_exposition_has_every_series_and_promtool_accepts_it(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        stage(conn, 1, 50)
        stage(conn, 501, 4, type_="no-such-type")
        ops.process_batch(conn, 1000)
        stage(conn, 1001, 7, ago="2 minutes")
        fail_critical_dq_rule(conn)
    registry = CollectorRegistry(auto_describe=False)
    collector = HealthCollector(db_dsn)
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
    finally:
        collector.close()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    types = {name: f.type for name, f in families.items()}
    assert types == {
        "opsconsole_up": "gauge",
        "opsconsole_scrape_duration_seconds": "gauge",
        "opsconsole_staging_rows": "gauge",
        "opsconsole_transactions_processed": "counter",
        "opsconsole_sla_breaches": "counter",
        "opsconsole_processing_latency_seconds": "histogram",
        "opsconsole_sla_breach_ratio": "gauge",
        "opsconsole_sla_target_seconds": "gauge",
        "opsconsole_oldest_pending_age_seconds": "gauge",
        "opsconsole_workers": "gauge",
        "opsconsole_workers_busy": "gauge",
        "opsconsole_dq_rule_passed": "gauge",
        "opsconsole_dq_last_run_age_seconds": "gauge",
    }
    assert all(f.documentation for f in families.values())
    values = samples(text)
    assert values["opsconsole_up"] == 1
    assert values['opsconsole_staging_rows{status="pending"}'] == 7
    assert values['opsconsole_staging_rows{status="dead_letter"}'] == 4
    assert values['opsconsole_staging_rows{status="processed"}'] == 50
    assert values["opsconsole_transactions_processed_total"] == 50
    assert values["opsconsole_processing_latency_seconds_count"] == 50
    assert values['opsconsole_processing_latency_seconds_bucket{le="+Inf"}'] == 50
    assert 120 <= values["opsconsole_oldest_pending_age_seconds"] < 185
    assert (
        values[
            'opsconsole_dq_rule_passed{rule="customer_email_not_null",severity="critical",table="crm_customers"}'
        ]
        == 0
    )
    assert values["opsconsole_workers"] == 0
    # every series an alert rule reads is exported (exporter_down reads Prometheus' own `up`)
    for rule in health.RULES:
        metric = rule.promql.split("(")[-1].split("{")[0].split("[")[0].strip()
        assert metric == "up" or metric in families or metric in values, (rule.name, metric)

    if PROMTOOL is None:
        pytest.skip(NO_PROMTOOL)
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (
        lint.stdout + lint.stderr
    )


@pytest.mark.skipif(
    bool(os.environ.get("OPSCONSOLE_TEST_DSN")), reason="stops a server of its own (embedded)"
)
def test_up_goes_to_zero_while_the_server_is_stopped_and_the_exporter_keeps_serving():
    with tempfile.TemporaryDirectory(prefix="oc-metrics-", dir="/tmp") as tmp:
        server = EmbeddedServer(Path(tmp) / "pg", settings={"fsync": "off", "full_page_writes": "off"})
        try:
            dsn = server.ensure_running().dsn
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate.migrate(conn)
            with exporter(dsn) as (url, proc):
                assert samples(http_get(url))["opsconsole_up"] == 1
                server.stop()
                down = samples(http_get(url))
                assert down["opsconsole_up"] == 0
                assert not [k for k in down if k.startswith("opsconsole_staging_rows")]  # no stale data
                assert samples(http_get(url))["opsconsole_up"] == 0  # still serving, still 0
                server.ensure_running()
                assert wait_for(
                    "opsconsole_up back to 1", lambda: samples(http_get(url))["opsconsole_up"] == 1
                )
                assert proc.poll() is None
                proc.terminate()
                _, stderr = proc.communicate(timeout=10)
            assert proc.returncode == 0
            assert "Traceback" not in stderr
            lines = stderr.splitlines()
            assert len([line for line in lines if "cannot read the database" in line]) == 1, stderr
            assert len([line for line in lines if "readable again" in line]) == 1, stderr
        finally:
            server.stop()


def test_a_bad_listen_address_is_one_sentence_and_exit_2():
    dsn = "host=127.0.0.1 port=1 dbname=x user=x"
    for listen, says in (
        ("9187", "--listen takes host:port (for example 127.0.0.1:9187), not '9187'."),
        ("127.0.0.1:http", "The port in --listen '127.0.0.1:http' is not a number."),
        ("127.0.0.1:70000", "The port in --listen '127.0.0.1:70000' is outside 1-65535."),
    ):
        result = CliRunner().invoke(main, ["--dsn", dsn, "metrics", "--listen", listen])
        assert result.exit_code == 2, result.output
        assert says in result.output and len(result.output.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["--dsn", dsn, "metrics", "--listen", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert f"Cannot listen on 127.0.0.1:{port}: Address already in use." in result.output
    assert parse_listen("[::1]:9187") == ("::1", 9187) and parse_listen(":9187") == ("0.0.0.0", 9187)


# -- the alert rules --------------------------------------------------------------------------------


def test_the_rules_file_states_the_health_rules_thresholds():
    """deploy/prometheus/opsconsole.rules.yml is what `opsconsole metrics --print-rules` prints from
    ops.health.RULES, whose thresholds `opsconsole check` uses: one definition, two readers."""
    shipped = (DEPLOY / "opsconsole.rules.yml").read_text()
    assert shipped == alert_rules_yaml(), (
        "regenerate: opsconsole metrics --print-rules > deploy/prometheus/opsconsole.rules.yml"
    )
    printed = CliRunner().invoke(main, ["metrics", "--print-rules"])
    assert printed.exit_code == 0 and printed.output == shipped
    for rule in health.RULES:
        for _level, threshold in rule.levels():
            assert json.dumps(f"{rule.promql} {rule.op} {health.fmt_number(threshold)}") in shipped
        assert re.search(r"pane \d \w[\w ]+ \(key \d\)", rule.runbook), rule.runbook  # pane and key


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(DEPLOY / "opsconsole.rules.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0 and "SUCCESS: 9 rules found" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", str(DEPLOY / "tests" / "opsconsole.test.yml")],
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr
    config = subprocess.run(
        [PROMTOOL, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    if AMTOOL is not None:
        am = subprocess.run(
            [AMTOOL, "check-config", str(DEPLOY / "alertmanager.yml")], capture_output=True, text=True
        )
        assert am.returncode == 0, am.stdout + am.stderr


# -- end to end: a real Prometheus and Alertmanager -------------------------------------------------


class _Webhook(BaseHTTPRequestHandler):
    received: queue.Queue

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.put((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def from_example(name: str, replacements: dict[str, str]) -> str:
    """An example config of deploy/prometheus with test addresses and intervals put in."""
    text = (DEPLOY / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@pytest.mark.skipif(
    PROMETHEUS is None or ALERTMANAGER is None,
    reason="prometheus and prometheus-alertmanager are not installed "
    "(Debian packages; .ci/run installs them as root)",
)
def test_prometheus_scrapes_the_exporter_and_an_alert_reaches_a_webhook_through_alertmanager(
    db_dsn, tmp_path
):
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        fail_critical_dq_rule(conn)
    received: queue.Queue = queue.Queue()
    hook = ThreadingHTTPServer(("127.0.0.1", 0), type("Hook", (_Webhook,), {"received": received}))
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    prom_port, am_port = free_port(), free_port()
    try:
        with exporter(db_dsn) as (url, _proc):
            exporter_addr = url.removeprefix("http://").removesuffix("/metrics")
            (tmp_path / "alertmanager.yml").write_text(
                from_example(
                    "alertmanager.yml",
                    {
                        "http://127.0.0.1:5001/opsconsole": f"http://127.0.0.1:{hook.server_port}/opsconsole",
                        "group_wait: 30s": "group_wait: 1s",
                        "group_interval: 5m": "group_interval: 1s",
                    },
                )
            )
            shutil.copy(DEPLOY / "opsconsole.rules.yml", tmp_path / "opsconsole.rules.yml")
            (tmp_path / "prometheus.yml").write_text(
                from_example(
                    "prometheus.yml",
                    {
                        "scrape_interval: 15s\n  evaluation_interval: 15s": (
                            "scrape_interval: 1s\n  evaluation_interval: 1s"
                        ),
                        "    scrape_interval: 15s\n    scrape_timeout: 10s": (
                            "    scrape_interval: 1s\n    scrape_timeout: 1s"
                        ),
                        '"127.0.0.1:9187"': f'"{exporter_addr}"',
                        '"127.0.0.1:9093"': f'"127.0.0.1:{am_port}"',
                    },
                )
            )
            am_args = [
                ALERTMANAGER,
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ]
            prom_args = [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ]
            with running(am_args) as am, running(prom_args) as prom:
                api = f"http://127.0.0.1:{prom_port}/api/v1/query?query="

                def scraped() -> bool:
                    q = urllib.parse.quote('up{job="opsconsole"}')
                    result = json.loads(http_get(api + q))["data"]["result"]
                    return bool(result) and result[0]["value"][1] == "1"

                assert wait_for("Prometheus scrapes the exporter (up == 1)", scraped, timeout=30), (
                    prom.poll(),
                    am.poll(),
                )
                q = urllib.parse.quote("opsconsole_up")
                assert json.loads(http_get(api + q))["data"]["result"][0]["value"][1] == "1"

                def paged():
                    try:
                        path, payload = received.get(timeout=1)
                    except queue.Empty:
                        return None
                    alerts = [
                        a
                        for a in payload["alerts"]
                        if a["labels"]["alertname"] == "OpsconsoleCriticalDqFailing"
                    ]
                    return (path, payload, alerts[0]) if alerts else None

                path, payload, alert = wait_for(
                    "the webhook receives the DQ alert", paged, timeout=40, every=0
                )
                assert path == "/opsconsole" and alert["status"] == "firing"
                assert (
                    alert["labels"]["rule"] == "customer_email_not_null"
                    and alert["labels"]["severity"] == "critical"
                )
                assert "Data quality (key 3)" in alert["annotations"]["runbook"]
                assert payload["receiver"] == "opsconsole-webhook"
    finally:
        hook.shutdown()
        hook.server_close()
