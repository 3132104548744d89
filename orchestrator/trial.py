"""One trial as plain data: ``TrialSpec`` in, ``TrialResult`` out, and ``run_trial`` between them.

The seam between the study (Optuna, Ray, MLflow) and the model code (tensors): both sides only
exchange these picklable dataclasses, so a trial runs unchanged in a test, a local Ray actor or a
GPU node. The heavy objects a trial needs (baseline model, datasets, baseline measurements) live in a
:class:`WorkerCache` that a worker keeps across trials.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import OrchestratorError


@dataclass(frozen=True)
class Workload:
    """What every trial of a study shares; also the key of the worker's cache."""

    study: str
    kind: str  # "real" | "fake"
    model: str  # weights path or official name
    data: str  # data yaml path or official name
    base_dir: str  # folder of the study file (relative model/data paths start here)
    imgsz: int
    batch: int
    device: str  # auto | cpu | cuda | cuda:N
    seed: int
    method: str
    granularity: str
    importance: str
    round_to: int
    exclude: tuple[str, ...]
    hyp: str
    overrides: tuple[tuple[str, float], ...]
    save_checkpoint: bool  # return the pruned checkpoint's bytes
    threads: int  # torch threads in the worker
    fake: Any = None  # FakeTrialSpec for kind == "fake"


@dataclass(frozen=True)
class TrialSpec:
    number: int
    workload: Workload
    ratios: dict[str, float]  # group -> fraction removed
    epochs: int
    lr0: float
    attempt: int = 0  # 1 when retried after its worker died


@dataclass(frozen=True)
class BaselineResult:
    """The unpruned model, measured once per study: the groups the search runs over and its metrics."""

    groups: dict[str, list[str]]  # group -> conv layer names
    metrics: dict[str, float]
    device: str
    wall_s: float


@dataclass(frozen=True)
class TrialResult:
    number: int
    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # one record per fine-tune epoch
    files: dict[str, bytes] = field(default_factory=dict)  # artifact name -> content (checkpoint, ratio map)
    device: str = ""
    worker: str = ""  # host:pid
    failure: str = ""  # one line: why it failed
    wall_s: float = 0.0
    attempt: int = 0


class WorkerCache:
    """Objects a worker loads once and reuses for every trial of the same workload."""

    def __init__(self) -> None:
        self.key: Workload | None = None
        self.items: dict[str, Any] = {}

    def for_workload(self, workload: Workload) -> dict[str, Any]:
        if self.key != workload:
            self.key, self.items = workload, {}
        return self.items


def execute(spec: TrialSpec, cache: WorkerCache, worker: str = "") -> TrialResult:
    """Run one trial and turn any exception into a failed result with a one-line reason."""
    t0 = time.perf_counter()
    try:
        if spec.workload.kind == "fake":
            from .fake_trial import run_fake_trial

            result = run_fake_trial(spec, cache)
        else:
            result = run_trial(spec, cache)
    except Exception as e:  # a trial must never take its worker down
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not isinstance(e, OrchestratorError):
            reason = f"{type(e).__name__}: {reason} ({_where(e)})"
        result = TrialResult(spec.number, ok=False, failure=reason)
    return replace(result, wall_s=time.perf_counter() - t0, worker=worker, attempt=spec.attempt)


def execute_baseline(workload: Workload, cache: WorkerCache) -> BaselineResult:
    """Validate and measure the unpruned model once (cached in the worker for speedups)."""
    if workload.kind == "fake":
        from .fake_trial import fake_baseline

        return fake_baseline(workload, cache)
    return run_baseline(workload, cache)


def run_trial(spec: TrialSpec, cache: WorkerCache) -> TrialResult:
    """Prune the baseline with the spec's ratios, fine-tune, validate, measure, serialize the checkpoint."""
    raise OrchestratorError("the real trial is not wired in yet: use `trial: fake` in the study file")


def run_baseline(workload: Workload, cache: WorkerCache) -> BaselineResult:
    raise OrchestratorError("the real trial is not wired in yet: use `trial: fake` in the study file")


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "?"
    last = tb[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
