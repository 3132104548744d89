"""Params, metrics and tags written to a run in MLflow's batch sizes, every value masked for the study's URLs.

Apart from the tracker so that the tracker says *what* a run holds and this says *how* it reaches the store:
MLflow caps a batch (100 params, 1000 metrics) and a param's length, and a URL's password may hide in any value.
"""

from __future__ import annotations

from typing import Any

from ..urls import mask_url

PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
PARAM_CHARS = 6000


class RunWriter:
    """Writes to runs through one client, masking the passwords of ``urls`` in every param and tag."""

    def __init__(self, client: Any, urls: tuple[str, ...]):
        self.client = client
        self.urls = urls

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, mask_url(str(v), *self.urls)[:PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + PARAMS_PER_BATCH])

    def batch(
        self,
        run_id: str,
        *,
        metrics: dict[str, float],
        ts: int,
        tags: dict[str, str] | None = None,
        history: list[dict[str, float]] = (),
        step: int = 0,
    ) -> None:
        """``metrics`` at ``step``, ``history`` as ``epoch_*`` series (one step per epoch), ``tags`` once."""
        from mlflow.entities import Metric, RunTag

        ms = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for epoch, rec in enumerate(history):
            ms.extend(Metric(f"epoch_{k}", float(v), ts, epoch) for k, v in rec.items() if _is_num(v))
        tg = [RunTag(k, mask_url(str(v), *self.urls)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(ms), 1), METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=ms[i : i + METRICS_PER_BATCH], tags=tg if i == 0 else [])

    def text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
