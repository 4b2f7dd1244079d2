"""How long a trial's custom metric (gauges.TrialGauges) takes to appear on Ray's Prometheus endpoint.

Starts a fresh local Ray per report interval (Ray's default, then the 1 s floor),
sets the gauges from an actor (as a trial does) and polls every node's /metrics
until the values show up. Also times ray.init with the dashboard on.

    .venv/bin/python benchmarks/metrics_latency.py            # prints JSON
"""

from __future__ import annotations

import json
import time

import ray

from fersearch.search import dashboard, gauges


@ray.remote(num_cpus=0)
class FakeTrial:
    def report(self, experiment: str, trial_id: str, epoch: int, acc: float) -> float:
        gauges.TrialGauges(experiment, trial_id).update({"epoch": epoch, "val_acc": acc, "best_val_acc": acc})
        return time.time()


def visible(trial_id: str) -> bool:
    return any(labels.get("trial_id") == trial_id for _, labels, _ in gauges.trial_samples(timeout=10))


def measure(report_interval_ms: int | None, timeout: float = 60.0) -> dict:
    system_config = {"metrics_report_interval_ms": report_interval_ms} if report_interval_ms else None
    t0 = time.time()
    ray.init(address="local", num_cpus=1, logging_level="ERROR", _system_config=system_config,
             **dashboard.ray_init_kwargs())
    init_s = time.time() - t0
    try:
        actor = FakeTrial.remote()
        set_at = ray.get(actor.report.remote("bench", "t0", 1, 0.5))
        while time.time() - set_at < timeout and not visible("t0"):
            time.sleep(0.2)
        latency = time.time() - set_at
        return {"report_interval_ms": report_interval_ms or "default (10000)", "ray_init_s": round(init_s, 2),
                "metric_visible_after_s": round(latency, 2) if latency < timeout else None}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    print(json.dumps({"runs": [measure(None), measure(1000)]}, indent=2))
