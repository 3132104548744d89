"""Ray: start a local instance or join a cluster, and run trials on long-lived worker actors.

One actor per slot (a GPU, or ``cpus_per_trial`` CPUs): it loads the baseline model, the datasets and
the baseline measurements once (:class:`~orchestrator.trial.real.WorkerCache`) and reuses them for every
trial it runs. A trial's own exceptions come back as failed results; a worker that dies (SIGKILL,
out of memory, a lost node) is replaced and its trial retried once on the fresh worker.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..errors import OrchestratorError
from ..trial.contract import (
    AllocationRequest,
    BaselineResult,
    TrialResult,
    TrialSpec,
    WorkerCache,
    Workload,
)
from ..trial.runner import execute, execute_allocations, execute_baseline, start_worker
from ..urls import mask_url


@dataclass(frozen=True)
class Cluster:
    """What the study runs on: where, how many slots, what each trial gets."""

    address: str  # "local" or the address joined
    started_here: bool  # a local instance this process must shut down
    cpus: float
    gpus: float
    slots: int
    cpus_per_trial: int
    gpus_per_trial: float


def connect(
    address: str | None,
    *,
    gpus_per_trial: float | None,
    cpus_per_trial: int,
    max_concurrent: int | None,
    device: str,
    num_cpus: int | None = None,
) -> Cluster:
    """Join ``address`` (``auto``, ``host:port``, ``ray://host:port``) or start a local Ray; size the slots.

    A study that needs GPUs on a cluster without any is refused here: Ray would keep its tasks pending forever.
    """
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        raise OrchestratorError("ray is not installed: pip install 'ray>=2.30'") from None
    started = False
    if ray.is_initialized():
        where = "this process's Ray"
    elif address:
        where = mask_url(address)
        _check_reachable(address, where)
        try:
            with _keep_sigterm():
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as e:  # ConnectionError, TimeoutError, RuntimeError depending on the path
            msg = mask_url(str(e), address).splitlines()[0] if str(e) else type(e).__name__
            raise OrchestratorError(f"cannot join the Ray cluster at {where}: {msg}") from None
    else:
        where = "local"
        with _loopback_only(), _keep_sigterm():
            ray.init(
                num_cpus=num_cpus or os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                object_store_memory=512 * 1024**2,
                _node_ip_address="127.0.0.1",
            )
        started = True
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    problem = None
    if gpus_per_trial > 0 and gpus == 0:
        problem = (
            f"the study asks for {gpus_per_trial:g} GPU per trial but the Ray cluster ({where}) has no GPU: "
            "set resources.gpus_per_trial: 0 (and device: cpu) or join a cluster with GPUs"
        )
    elif device.startswith("cuda") and gpus_per_trial == 0:
        problem = f"device is {device} but resources.gpus_per_trial is 0: trials would get no GPU"
    elif cpus_per_trial > cpus:
        problem = f"resources.cpus_per_trial is {cpus_per_trial} but the Ray cluster ({where}) has {cpus:g} CPUs"
    if problem:
        if started:
            ray.shutdown()
        raise OrchestratorError(problem)
    slots = math.floor(gpus / gpus_per_trial + 1e-9) if gpus_per_trial > 0 else math.floor(cpus / cpus_per_trial)
    slots = max(1, min(slots, max_concurrent or slots))
    return Cluster(where, started, cpus, gpus, slots, cpus_per_trial, gpus_per_trial)


@contextmanager
def _keep_sigterm() -> Iterator[None]:
    """Put back the SIGTERM handler ``ray.init`` replaces (its own exits at once), once Ray has started.

    ``orchestrator run`` installs its handlers once (:func:`.resume.stop_on_signals`) so that SIGTERM stops like
    Ctrl-C; while ``ray.init`` runs, Ray's handler is in place and the command reads its SystemExit instead.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(previous):  # a handler someone installed; the default (or none from Python) stays Ray's
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local Ray starts: its servers (GCS, raylet, workers, the driver's) bind 127.0.0.1 only.

    Ray binds every server to the node IP it picks, and turns ``127.0.0.1`` into the machine's routable IP
    unless its cluster mode is off (its switch for laptops, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). Nothing
    here needs more than loopback; joining a cluster (``--address``) is the way to listen elsewhere. The
    variable reaches the processes Ray starts; the constant is Ray's already-imported copy of it.
    """
    from ray._private import ray_constants

    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    env, flag = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = flag
        if env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = env


def _check_reachable(address: str, where: str) -> None:
    """Fail in seconds when nothing listens at host:port (Ray itself retries for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise OrchestratorError(
            f"cannot join the Ray cluster at {where}: nothing answers there ({e.strerror or e}); "
            "start it with `ray start --head` or fix --address / resources.address"
        ) from None


def disconnect(cluster: Cluster) -> None:
    import ray

    if cluster.started_here and ray.is_initialized():
        ray.shutdown()


class _Worker:
    """A Ray actor that runs trials one after the other with its cache kept warm."""

    def __init__(self, threads: int, kind: str):
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.cache = WorkerCache()
        start_worker(kind, threads)

    def run(self, spec: TrialSpec) -> TrialResult:
        return execute(spec, self.cache, self.name)

    def baseline(self, workload: Workload) -> BaselineResult:
        return execute_baseline(workload, self.cache)

    def allocations(self, workload: Workload, request: AllocationRequest) -> list[dict[str, float]]:
        return execute_allocations(workload, request, self.cache)


class WorkerPool:
    """Fixed number of worker actors; ``submit`` a trial to an idle one, ``wait`` for finished ones."""

    def __init__(self, cluster: Cluster, kind: str):
        import ray

        self._ray = ray
        # ORCHESTRATOR_ASSETS / _CACHE / ... follow the driver to workers on other nodes
        env = {k: v for k, v in os.environ.items() if k.startswith("ORCHESTRATOR_")}
        self._cls = ray.remote(_Worker).options(
            num_cpus=cluster.cpus_per_trial,
            num_gpus=cluster.gpus_per_trial,
            max_restarts=0,
            max_concurrency=1,
            runtime_env={"env_vars": env} if env else None,
        )
        self._args = (cluster.cpus_per_trial, kind)
        self.idle: list[Any] = [self._new() for _ in range(cluster.slots)]
        self.busy: dict[Any, tuple[Any, TrialSpec, float]] = {}  # ref -> (actor, spec, start time)
        self.events: list[str] = []  # worker deaths and retries, for the driver to report

    def _new(self):
        return self._cls.remote(*self._args)

    @property
    def free(self) -> int:
        return len(self.idle)

    @property
    def running(self) -> list[TrialSpec]:
        return [spec for _, spec, _ in self.busy.values()]

    def submit(self, spec: TrialSpec) -> None:
        actor = self.idle.pop()
        self.busy[actor.run.remote(spec)] = (actor, spec, time.time())

    def wait(self, timeout: float) -> list[TrialResult]:
        """Results of the trials finished within ``timeout`` seconds (maybe none)."""
        if not self.busy:
            time.sleep(timeout)
            return []
        ray = self._ray
        ready, _ = ray.wait(list(self.busy), num_returns=1, timeout=timeout)
        if ready:  # collect everything else already finished too
            ready, _ = ray.wait(list(self.busy), num_returns=len(self.busy), timeout=0)
        out = []
        for ref in ready:
            actor, spec, t0 = self.busy.pop(ref)
            try:
                out.append(ray.get(ref))
                self.idle.append(actor)
            except ray.exceptions.RayTaskError as e:  # execute() catches trial errors: this is a pickling error
                out.append(TrialResult(spec.number, False, failure=f"task error: {str(e.cause)[:200]}"))
                self.idle.append(actor)
            except (ray.exceptions.RayActorError, ray.exceptions.RayError) as e:
                self._replace(actor)
                why = _death_reason(e)
                if spec.attempt == 0:
                    self.events.append(f"trial {spec.number}: worker died ({why}); retrying on a fresh worker")
                    self.submit(replace(spec, attempt=1))
                else:
                    self.events.append(f"trial {spec.number}: worker died again ({why}); trial failed")
                    out.append(
                        TrialResult(
                            spec.number,
                            False,
                            failure=f"worker died twice: {why}",
                            wall_s=time.time() - t0,
                            attempt=spec.attempt,
                        )
                    )
        return out

    def baseline(self, workload: Workload) -> BaselineResult:
        """Measure the unpruned model on one worker (which keeps it cached); retried once if it dies."""
        return self._once("baseline", "measuring the unpruned baseline", workload)

    def allocations(self, workload: Workload, request: AllocationRequest) -> list[dict[str, float]]:
        """The warm start's ratio maps, computed on a worker (which has the weights cached)."""
        return self._once("allocations", "computing the warm start", workload, request)

    def _once(self, method: str, what: str, *args: Any) -> Any:
        ray = self._ray
        for attempt in range(2):
            actor = self.idle[-1]
            try:
                return ray.get(getattr(actor, method).remote(*args))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if e.cause is not None else e
                if isinstance(cause, OrchestratorError):
                    raise cause from None
                raise OrchestratorError(f"{what} failed: {type(cause).__name__}: {cause}") from None
            except ray.exceptions.RayError as e:
                self.idle.remove(actor)
                self._replace(actor)
                if attempt:
                    raise OrchestratorError(f"the worker {what} died twice: {_death_reason(e)}") from e
        raise AssertionError("unreachable")

    def _replace(self, actor) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:
            pass
        self.idle.append(self._new())

    def cancel(self) -> list[TrialSpec]:
        """Stop every running trial (their workers are killed); return their specs."""
        specs = []
        for actor, spec, _ in self.busy.values():
            specs.append(spec)
            self._ray.kill(actor, no_restart=True)
        self.busy.clear()
        return specs

    def shutdown(self) -> None:
        self.cancel()
        for actor in self.idle:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.idle.clear()


def _death_reason(e: Exception) -> str:
    text = str(e)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    return f"{type(e).__name__}: {first[:160]}"
