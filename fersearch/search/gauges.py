"""Custom Ray metrics of each trial (epoch, val_acc, best val_acc), for the dashboard's charts.

    TrialGauges(experiment, trial_id).update(metrics)   # inside a trial, every epoch
    trial_samples()                                     # what every node's /metrics shows of them

Every Ray node exports Prometheus metrics at http://<node ip>:<MetricsExportPort>/metrics
(ray.nodes() lists the port). Custom `ray.util.metrics` values appear there with a
`ray_` prefix, about one report interval (metrics_report_interval_ms, 10 s by default)
after they are set, and disappear about two intervals after the reporting trial ends.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.util.metrics import Gauge

METRIC_PREFIX = "fersearch_trial_"
GAUGES = {  # gauge name -> (metrics key, description)
    "fersearch_trial_epoch": ("epoch", "Epochs a fersearch trial has finished"),
    "fersearch_trial_val_acc": ("val_acc", "Validation accuracy of a fersearch trial's latest epoch"),
    "fersearch_trial_best_val_acc": ("best_val_acc", "Best validation accuracy of a fersearch trial so far"),
}
TAG_KEYS = ("experiment", "trial_id")
PROMETHEUS_PREFIX = "ray_"  # Ray's exporter puts custom metrics in its own namespace

_gauges: dict[str, Gauge] = {}  # one Gauge object per name and process (Ray registers by name)


def _gauge(name: str) -> Gauge:
    if name not in _gauges:
        from ray.util.metrics import Gauge

        _gauges[name] = Gauge(name, description=GAUGES[name][1], tag_keys=TAG_KEYS)
    return _gauges[name]


class TrialGauges:
    """Custom Ray metrics of one trial, tagged with the experiment and trial id, so the
    dashboard's Prometheus/Grafana panels chart the search.
    Create it inside the trial; call update(metrics) after every epoch."""

    def __init__(self, experiment: str, trial_id: str):
        self.tags = {"experiment": str(experiment), "trial_id": str(trial_id)}

    def update(self, metrics: Mapping[str, object]) -> None:
        for name, (key, _) in GAUGES.items():
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                _gauge(name).set(float(value), tags=self.tags)


def metrics_urls() -> list[str]:
    """The Prometheus endpoints of the connected cluster's live nodes (http://ip:port/metrics)."""
    import ray

    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the fersearch trial gauges in a Prometheus text page
    (prometheus_client's parser; Ray exports them as ray_fersearch_trial_*)."""
    from prometheus_client.parser import text_string_to_metric_families

    prefix = PROMETHEUS_PREFIX + METRIC_PREFIX
    return [(s.name, dict(s.labels), float(s.value)) for family in text_string_to_metric_families(text)
            if family.name.startswith(prefix) for s in family.samples if s.name.startswith(prefix)]


def trial_samples(timeout: float = 5.0) -> list[tuple[str, dict[str, str], float]]:
    """The fersearch trial gauges every live node of the connected cluster exports now."""
    out = []
    for url in metrics_urls():
        with urllib.request.urlopen(url, timeout=timeout) as r:
            out += parse_samples(r.read().decode())
    return out
