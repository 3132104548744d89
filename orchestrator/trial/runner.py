"""The trial contract: a :class:`TrialRunner` runs a study's baseline, its trials and its warm-start allocations.

Two implementations, picked by the workload's ``kind``: the real one (``trial.real.RealTrial``: tensors) and the fake
one (``trial.fake.FakeTrial``: numbers shaped like pruning, for the study loop's tests and benchmarks). Neither
imports the other; both return the same metric keys and artifact names (:data:`ARTIFACTS`), which
tests/trial/test_runner_contract.py holds them to. Workers call :func:`execute` and friends, never a runner directly.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback
from dataclasses import replace
from typing import Protocol

from ..errors import OrchestratorError
from .contract import AllocationRequest, BaselineResult, TrialResult, TrialSpec, WorkerCache, Workload

ARTIFACTS = {"checkpoint": "pruned.pt", "ratios": "ratios.json", "int8": "pruned.int8.onnx"}

# workload kind -> "module:class" (imported when a worker first needs it: the fake never loads torch)
RUNNERS = {"real": "orchestrator.trial.real:RealTrial", "fake": "orchestrator.trial.fake:FakeTrial"}


class TrialRunner(Protocol):
    def baseline(self, workload: Workload, cache: WorkerCache) -> BaselineResult:
        """The unpruned model measured once: its groups (the search space) and metrics."""
        ...

    def trial(self, spec: TrialSpec, cache: WorkerCache) -> TrialResult:
        """Prune, fine-tune, deploy, validate and measure one trial; may raise (``execute`` records why)."""
        ...

    def allocations(self, workload: Workload, request: AllocationRequest, cache: WorkerCache) -> list[dict[str, float]]:
        """Warm-start ratio maps, one per target."""
        ...


def runner_for(kind: str) -> TrialRunner:
    try:
        module, _, name = RUNNERS[kind].partition(":")
    except KeyError:
        raise OrchestratorError(f"unknown trial kind {kind!r}: expected one of {', '.join(RUNNERS)}") from None
    return getattr(importlib.import_module(module), name)()


def start_worker(kind: str, threads: int) -> None:
    """Process-wide settings of a worker process, set once when it starts (never at import)."""
    # Ray reuses worker processes and sets OMP_NUM_THREADS only sometimes: set torch's own count here
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if kind != "fake":  # the fake trial never loads torch
        import torch

        torch.set_num_threads(threads)


def execute(spec: TrialSpec, cache: WorkerCache, worker: str = "") -> TrialResult:
    """Run one trial and turn any exception into a failed result with a one-line reason."""
    t0 = time.perf_counter()
    try:
        result = runner_for(spec.workload.kind).trial(spec, cache)
    except Exception as e:  # a trial must never take its worker down
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not isinstance(e, OrchestratorError):
            reason = f"{type(e).__name__}: {reason} ({_where(e)})"
        result = TrialResult(spec.number, ok=False, failure=reason)
    return replace(result, wall_s=time.perf_counter() - t0, worker=worker, attempt=spec.attempt)


def execute_baseline(workload: Workload, cache: WorkerCache) -> BaselineResult:
    return runner_for(workload.kind).baseline(workload, cache)


def execute_allocations(workload: Workload, request: AllocationRequest, cache: WorkerCache) -> list[dict[str, float]]:
    return runner_for(workload.kind).allocations(workload, request, cache)


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "?"
    last = tb[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
