"""contrib/: alerting rules pass promtool's checks and unit tests, and the
dashboard only queries metrics the daemon exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fcnetd.metrics import COUNTER_FIELDS, NETWORK_LABELS, Exposition, Snapshot, TapRow, build
from fcnetd.procstats import Counters

CONTRIB = Path(__file__).parents[2] / "contrib"


def promtool(*args):
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing (Debian package prometheus; tools/bootstrap.sh installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True,
                          cwd=CONTRIB / "prometheus")


def test_rules_pass_promtool_check():
    res = promtool("check", "rules", "fcnetd-alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 rules found" in res.stdout


def test_rules_unit_tests_pass():
    res = promtool("test", "rules", "fcnetd-alerts.test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def exported_names() -> set[str]:
    labels = tuple("n" if label == "network" else "x" for label in NETWORK_LABELS)
    snap = Snapshot(taken=0, host="h", networks=((labels, "bridge", 1, 1),),
                    taps=(TapRow("vmtap1", "vm", "eth0", "n", True, True, Counters(*range(8))),),
                    bridges=(("fcbr0", True, True, False),), requests={("X", "ok"): 1},
                    latency_buckets={}, latency_count=1, latency_sum=0.1, registry_writes={"ok": 1},
                    registry_write_seconds=(1, 0.01), reconcile={}, access_denied=0)
    ex = Exposition()
    ex.publish(snap)
    text = ex.render().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}


def test_dashboard_queries_only_exported_metrics():
    dash = json.loads((CONTRIB / "grafana" / "fcnetd-dashboard.json").read_text())
    names = exported_names()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used = {m for e in exprs for m in re.findall(r"\b(fcnetd_[a-z_]+)", e)}
    assert used and used <= names, f"unknown metrics: {used - names}"


def test_build_reads_counters_for_taps_only():
    state = {"host": "h", "networks": (), "taps": [("vmtap1", "vm", "eth0", "n", True, False)],
             "bridges": (), "requests": {}, "latency_buckets": {}, "latency_count": 0, "latency_sum": 0.0,
             "registry_writes": {}, "registry_write_seconds": (0, 0.0), "reconcile": {}, "access_denied": 0}
    asked = []
    snap = build(state, lambda names: asked.append(names) or {"vmtap1": Counters(*range(8))})
    assert asked == [{"vmtap1"}] and snap.taps[0].counters.tx_bytes == 4
    assert len(COUNTER_FIELDS) == 8


def test_fast_tap_series_parse_like_prometheus_client_output():
    """The hand-rolled TAP renderer must mean exactly what prometheus-client's
    encoder would have written for the same samples, escaping included."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.parser import text_string_to_metric_families
    from fcnetd.metrics import TapSeries

    rows = (TapRow('vmtap1', 'vm"1\\x', "eth0", "net\nline", True, False, Counters(*range(8))),)
    ours = TapSeries().render(rows)

    class Reference:
        def collect(self):
            fam = CounterMetricFamily("fcnetd_tap_receive_bytes", "x", labels=["tap", "vm", "nic", "network"])
            fam.add_metric(["vmtap1", 'vm"1\\x', "eth0", "net\nline"], 0)
            yield fam
    reg = CollectorRegistry()
    reg.register(Reference())
    ref = [s for f in text_string_to_metric_families(generate_latest(reg).decode()) for s in f.samples]
    got = [s for f in text_string_to_metric_families(ours) for s in f.samples
           if s.name == "fcnetd_tap_receive_bytes_total"]
    assert got == ref
