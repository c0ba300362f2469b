"""Logging one trial's metrics: vgtune.tracking.logger's batches against one request per metric.

One request per metric is what Ray's MLflowLoggerCallback does. Both write a
depth-24, 6-epoch trial (scalars + 7 per-block series, init + 6 epochs) to a
fresh MLflow SQLite store of the same kind.
"""

from __future__ import annotations

import random
import tempfile
import time

from mlflow.tracking import MlflowClient

from vgtune.core.columns import EPOCH_METRICS, SERIES
from vgtune.tracking.logger import epoch_metrics, log_metrics
from vgtune.tracking.store import experiment_id

DEPTH, EPOCHS = 24, 6


def _results() -> list[dict]:
    rng = random.Random(0)
    return [{**{k: rng.random() for k in EPOCH_METRICS},
             "layers": {name: [rng.random() for _ in range(DEPTH)] for name in SERIES}} for _ in range(EPOCHS + 1)]


def _store(folder: str, name: str) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{folder}/{name}.db"
    client = MlflowClient(uri)
    run = client.create_run(experiment_id(client, uri, "bench"))
    return client, run.info.run_id


def run() -> list[dict]:
    results = _results()
    with tempfile.TemporaryDirectory() as d:
        client, run_id = _store(d, "batched")
        t0 = time.perf_counter()
        for step, result in enumerate(results):
            log_metrics(client, run_id, epoch_metrics(result, step, int(time.time() * 1000)))
        batched = time.perf_counter() - t0
        n = sum(len(epoch_metrics(r, 0, 0)) for r in results)
        client, run_id = _store(d, "per_metric")
        t0 = time.perf_counter()
        for step, result in enumerate(results):
            for m in epoch_metrics(result, step, int(time.time() * 1000)):
                client.log_metric(run_id, m.key, m.value, m.timestamp, m.step)
        single = time.perf_counter() - t0
    speedup = single / batched
    return [{"name": "tracking: one request per metric / vgtune batches", "value": speedup, "target": ">= 10",
             "ok": speedup >= 10,
             "note": f"{n} metrics of one trial to SQLite: per-metric {single:.2f}s, batched {batched:.2f}s"}]
