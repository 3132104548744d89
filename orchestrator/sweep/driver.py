"""The study loop: Optuna ask -> Ray worker -> Optuna tell -> MLflow, with resume and a clean stop.

The driver sees only specs and results, never a tensor. It is the only writer of the Optuna storage
and of MLflow. Running the same command again resumes: trials a dead driver left RUNNING are told
FAIL and their parameters enqueued again, finished trials missing from MLflow are logged, and the
loop goes on until ``n_trials`` trials are COMPLETE. A lease in the study's attributes keeps a second
driver off the same study.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import OrchestratorError
from ..search import (
    ATTR_ATTEMPT,
    ATTR_BASELINE,
    ATTR_DEVICE,
    ATTR_FAILURE,
    ATTR_HISTORY,
    ATTR_INTENDED,
    ATTR_METRICS,
    ATTR_RETRY_OF,
    ATTR_TEST,
    ATTR_WALL,
    ATTR_WARM_START,
    ATTR_WORKER,
    STUDY_BASELINE,
    STUDY_LEASE,
    STUDY_ORPHAN_FAILURES,
    STUDY_WARM_START_ENQUEUED,
    build_space,
    create_or_load,
    enqueue_baselines,
    enqueue_warm_start,
    failure_reason,
    hypervolume,
    intended_params,
    objective_values,
    open_storage,
    pareto_front,
    revealed,
    study_identity,
    trial_summary,
)
from ..study.checks import check_inputs, check_stores
from ..study.dimensions import trial_ratios, trial_values
from ..study.spec import StudySpec
from ..tracking.tracker import Tracker, archive_runs, check_identity, drop_staged, preflight, staging_dir
from ..trial.contract import AllocationRequest, TrialResult, TrialSpec, Workload
from ..urls import mask_url
from .dispatch import Cluster, WorkerPool, connect, disconnect
from .progress import ProgressView, StudyProgress

LEASE = STUDY_LEASE
LEASE_STALE_S = 90.0  # a driver on another host that has not beaten for this long is presumed dead
HEARTBEAT_S = 10.0
TRACKER_RETRY_S = 30.0


@dataclass(frozen=True)
class StudyOutcome:
    complete: int
    failed: int
    target: int | None
    stopped: str  # "done" | "interrupted" | "timeout" | "failures" | "lost lease"
    front: tuple[int, ...]
    hypervolume: float
    tracker_pending: int  # finished trials not yet in MLflow (tracker unreachable)


def run_study(
    spec: StudySpec,
    *,
    n_trials: int | None = None,
    address: str | None = None,
    console=None,
    live: bool | None = None,
    reset_tracking: bool = False,
) -> StudyOutcome:
    """Run (or resume) the study until ``n_trials`` trials are COMPLETE, the timeout passes or Ctrl-C.

    ``reset_tracking``: archive the study's MLflow runs first (they belong to a lost or replaced Optuna study).
    """
    if spec.trial == "real":  # weights and data must be findable before anything is created
        check_inputs(spec, groups=False)
    else:  # a damaged or read-only SQLite store is refused before anything is created (check_inputs does it too)
        check_stores(spec)
    preflight(spec)
    storage = open_storage(spec.storage)
    study = create_or_load(spec, storage)
    lease = _acquire_lease(study, spec)
    progress = StudyProgress(spec, n_trials or spec.budget.n_trials)
    view = ProgressView(progress, console, live)
    try:
        identity = study_identity(study)
        if reset_tracking:
            view.event(f"--reset-tracking: {archive_runs(spec)} MLflow runs of study {spec.name} archived")
        try:
            check_identity(spec, identity, len(study.get_trials(deepcopy=False)))
        except OrchestratorError:
            raise
        except Exception:  # MLflow unreachable: the tracker catches up later, and never reuses another study's run
            pass
        r = spec.resources
        cluster = connect(
            address or r.address,
            gpus_per_trial=r.gpus_per_trial,
            cpus_per_trial=r.cpus_per_trial,
            max_concurrent=r.max_concurrent,
            device=spec.device,
            num_cpus=r.num_cpus,
        )
        # Ray's driver installs a SIGTERM handler that exits at once; a stop by SIGTERM (`ray job stop`, a
        # scheduler, kill) should stop like Ctrl-C instead: running trials re-queued, resume hint printed.
        # SIGINT too: a shell starts background jobs with SIGINT ignored, and `kill -INT` must still stop cleanly
        previous = _signals_as_interrupt()
        try:
            _recover_orphans(study, view)
            tracker = Tracker(spec, spec.storage)
            tracker.open(identity)
            return _Loop(spec, study, tracker, cluster, view, lease).run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            disconnect(cluster)
    finally:
        _release_lease(study, lease)


class _Loop:
    def __init__(self, spec: StudySpec, study, tracker: Tracker, cluster: Cluster, view: ProgressView, lease: dict):
        self.spec, self.study, self.tracker, self.cluster, self.view, self.lease = (
            spec,
            study,
            tracker,
            cluster,
            view,
            lease,
        )
        self.p = view.p
        self.p.slots = cluster.slots
        self.workload = Workload.from_spec(spec)
        self.asked: dict[int, object] = {}  # trial number -> optuna Trial
        self.ready: list[TrialSpec] = []  # asked ahead, waiting for a free slot
        self.baseline_metrics: dict[str, float] = {}
        self.ask_s: float | None = None  # how long study.ask takes (moving average)
        self.pending_log: set[int] = set()  # finished trials MLflow has not taken yet
        self.tracker_down_since: float | None = None
        self.failed_here = 0
        self.started = time.monotonic()
        self.last_beat = time.monotonic()

    def run(self) -> StudyOutcome:
        spec, study = self.spec, self.study
        pool = WorkerPool(self.cluster, spec.trial)
        stopped = "done"
        try:
            self.baseline = self._baseline(pool)
            self.space = build_space(spec, list(self.baseline["groups"]))
            self.dists = self.space.distributions()
            enqueue_baselines(spec, study, self.space)
            self._warm_start(pool)
            trials = study.get_trials(deepcopy=False)
            self.pending_log = {t.number for t in trials if t.state.is_finished()}
            self._sync_tracker(trials, force=True)
            self.p.complete = sum(t.state.name == "COMPLETE" for t in trials)
            self._refresh(trials)
            with self.view:
                self.view.event(
                    f"study {spec.name}: {self.p.complete} complete already, "
                    f"{self.cluster.slots} slot(s) on {self.cluster.address}"
                )
                stopped = self._loop(pool)
        except KeyboardInterrupt:
            stopped = "interrupted"
            for ts in pool.cancel() + self.ready:
                self._requeue(ts.number, "interrupted (Ctrl-C or SIGTERM) before it finished")
            self.ready.clear()
        finally:
            pool.shutdown()
        trials = study.get_trials(deepcopy=False)
        self._sync_tracker(trials, force=True)
        try:
            self.tracker.refresh_front(trials, self.baseline_metrics, force=True)
            self.tracker.log_test(revealed(trials, spec.directions))  # the chosen front, on the held-out split
            self.tracker.finish("FINISHED" if stopped == "done" else "KILLED")
        except Exception as e:  # the Optuna storage has everything: a later run catches up
            self._tracker_failed(e)
        front = pareto_front(trials, spec.directions)
        return StudyOutcome(
            self.p.complete,
            sum(t.state.name == "FAIL" for t in trials),
            self.p.target,
            stopped,
            tuple(t.number for t in front),
            hypervolume(trials, spec, self.baseline_metrics),
            len(self.pending_log),
        )

    def _loop(self, pool: WorkerPool) -> str:
        spec = self.spec
        budget = spec.budget
        max_failures = budget.max_failures or max(self.p.target or 0, 10)
        stopped = "done"
        while True:
            if _STOP.is_set():  # the signal's KeyboardInterrupt was lost inside a library call: stop now
                raise KeyboardInterrupt
            if time.monotonic() - self.last_beat > HEARTBEAT_S and not self._heartbeat():
                stopped = "lost lease"
            if budget.timeout_s is not None and time.monotonic() - self.started > budget.timeout_s:
                stopped = "timeout"
            if self.failed_here >= max_failures:
                stopped = "failures"
            self._fill(pool, stopped)
            self.p.running = [s.number for s in pool.running]
            self.view.update()
            if not pool.busy:
                return stopped
            results = pool.wait(0.5)
            while pool.free and self.ready:  # start the trial asked ahead before anything else
                pool.submit(self.ready.pop(0))
            for result in results:
                self._tell(result)
            # refill the slots before logging: MLflow and the plots then run while the next trials do
            self._fill(pool, stopped)
            if results:
                self._publish(results)
            if stopped == "done" and not self.ready and pool.busy and self._want_more(pool) and self._ask_ahead():
                self.ready.append(self._ask())
            for e in pool.events:
                self.view.event(e)
            pool.events.clear()

    def _fill(self, pool: WorkerPool, stopped: str) -> None:
        while pool.free and (self.ready or (stopped == "done" and self._want_more(pool))):
            pool.submit(self.ready.pop(0) if self.ready else self._ask())

    def _ask_ahead(self) -> bool:
        """Ask the next trial while the workers are busy, so a freed slot starts it at once?

        Asking writes every parameter to the storage (0.1-0.5 s on SQLite). That matters for short trials;
        for long ones the sampler had better see the latest result first, so only ask ahead when asking
        costs more than 2% of a trial.
        """
        if not self.p.durations or self.ask_s is None:
            return False
        recent = self.p.durations[-5:]
        return self.ask_s > 0.02 * (sum(recent) / len(recent))

    def _want_more(self, pool: WorkerPool) -> bool:
        return self.p.target is None or self.p.complete + len(pool.busy) + len(self.ready) < self.p.target

    def _ask(self) -> TrialSpec:
        t0 = time.perf_counter()
        trial = self.study.ask(self.dists)
        took = time.perf_counter() - t0
        self.ask_s = took if self.ask_s is None else 0.7 * self.ask_s + 0.3 * took
        self.asked[trial.number] = trial
        params = trial.params
        return TrialSpec(trial.number, self.workload, trial_ratios(params), trial_values(params, self.spec.space))

    def _tell(self, r: TrialResult) -> None:
        """Record a result in the Optuna storage (the source of truth) and stage its files."""
        from optuna.trial import TrialState

        spec, study = self.spec, self.study
        trial = self.asked.pop(r.number)
        trial.set_user_attr(ATTR_DEVICE, r.device)
        trial.set_user_attr(ATTR_WORKER, r.worker)
        trial.set_user_attr(ATTR_WALL, round(r.wall_s, 3))
        if r.attempt:
            trial.set_user_attr(ATTR_ATTEMPT, r.attempt)  # retried once after its worker died
        ok, failure = r.ok, r.failure
        if ok:
            try:
                values = objective_values(spec, r.metrics)
                if not all(math.isfinite(v) for v in values):
                    raise ValueError(f"non-finite objective values {values}")
            except (KeyError, ValueError) as e:
                ok, failure = False, f"bad result: {e}"
        if ok:
            trial.set_user_attr(ATTR_METRICS, r.metrics)
            trial.set_user_attr(ATTR_HISTORY, r.history)
            if r.test:
                trial.set_user_attr(ATTR_TEST, r.test)  # sealed: no selection reads it (holdout.py)
            if spec.constraints:
                violations = [c.violation(r.metrics, self.baseline_metrics) for c in spec.constraints]
                for c, v in zip(spec.constraints, violations):
                    trial.set_constraint(c.text, v)  # read by the samplers and by search.feasible
            study.tell(trial, values)
            self.p.complete += 1
            self.p.durations.append(r.wall_s)
            self._stage(r)
            m = r.metrics
            self.view.event(
                f"trial {r.number} done in {r.wall_s:.1f}s: "
                + ", ".join(f"{o.metric}={m[o.metric]:.4g}" for o in spec.objectives)
            )
        else:
            trial.set_user_attr(ATTR_FAILURE, failure)
            study.tell(trial, state=TrialState.FAIL)
            self.p.failed += 1
            self.failed_here += 1
            self.view.event(f"trial {r.number} failed: {failure}")
        self.pending_log.add(r.number)

    def _publish(self, results: list[TrialResult]) -> None:
        """MLflow runs, Pareto artifacts and the live view for the trials just told."""
        trials = self.study.get_trials(deepcopy=False)
        self._sync_tracker(trials)
        self._refresh(trials)

    def _stage(self, r: TrialResult) -> Path | None:
        if not r.files:
            return None
        folder = staging_dir(self.spec) / f"trial-{r.number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in r.files.items():
            (folder / name).write_bytes(data)
        return folder

    def _sync_tracker(self, trials: list, *, force: bool = False) -> None:
        """Log every finished trial MLflow does not have yet; a tracker outage is waited out, not fatal."""
        if not self.pending_log:
            return
        if self.tracker_down_since is not None and not force:
            if time.monotonic() - self.tracker_down_since < TRACKER_RETRY_S:
                return
        policy = self.spec.tracking.artifacts
        front = {t.number for t in pareto_front(trials, self.spec.directions)} if policy == "pareto" else set()
        by_number = {t.number: t for t in trials}
        attrs = self.study.user_attrs
        try:
            for n in sorted(self.pending_log):
                t = by_number.get(n)
                if t is None or not t.state.is_finished():
                    continue
                folder = staging_dir(self.spec) / f"trial-{n:04d}"
                keep = policy == "all" or (policy == "pareto" and n in front)
                self.tracker.log_trial(t, folder if folder.is_dir() else None, keep, failure_reason(t, attrs))
                drop_staged(folder)
                self.pending_log.discard(n)
            for n in self.tracker.lost:
                self.view.event(
                    f"trial {n}: its checkpoint is gone (not staged, not in the artifact folder): logged without"
                )
            self.tracker.lost.clear()
            self.tracker.refresh_front(trials, self.baseline_metrics, force=force)
            if self.tracker_down_since is not None:
                self.view.event("MLflow answers again: caught up")
            self.tracker_down_since = None
        except Exception as e:
            self._tracker_failed(e)

    def _tracker_failed(self, e: Exception) -> None:
        first = self.tracker_down_since is None
        self.tracker_down_since = time.monotonic()
        if first:
            why = mask_url(str(e), self.spec.tracking.uri, self.spec.storage).splitlines()[0][:120] if str(e) else ""
            self.view.event(
                f"MLflow at {mask_url(self.spec.tracking.uri)} failed ({type(e).__name__}: "
                f"{why}); results are safe in the Optuna "
                f"storage and are logged when it answers again, or by the next `orchestrator run {self.spec.path}`"
            )

    def _refresh(self, trials: list) -> None:
        front = pareto_front(trials, self.spec.directions)
        self.p.front = [trial_summary(t) for t in sorted(front, key=lambda t: t.values[0], reverse=True)]
        self.p.hypervolume = hypervolume(trials, self.spec, self.baseline_metrics)
        self.p.failed = sum(t.state.name == "FAIL" for t in trials)

    def _baseline(self, pool: WorkerPool) -> dict:
        stored = self.study.user_attrs.get(STUDY_BASELINE)
        if stored is None:
            self.view.event("measuring the unpruned baseline ...")
            b = pool.baseline(self.workload)
            stored = {"groups": b.groups, "metrics": b.metrics, "device": b.device, "wall_s": b.wall_s}
            self.study.set_user_attr(STUDY_BASELINE, stored)
        self.baseline_metrics = stored["metrics"]
        try:
            self.tracker.log_baseline(stored["metrics"], stored["device"])
        except Exception as e:
            self._tracker_failed(e)
        return stored

    def _warm_start(self, pool: WorkerPool) -> None:
        spec = self.spec
        if spec.sampler.warm_start == "none" or self.study.user_attrs.get(STUDY_WARM_START_ENQUEUED):
            return
        self.view.event(f"computing the {spec.sampler.warm_start} warm start ...")
        groups = {g: list(self.baseline["groups"][g]) for g in self.space.ratios}
        request = AllocationRequest(tuple(spec.baselines.ratios), groups, dict(self.space.ratios), self.space.step)
        enqueue_warm_start(spec, self.study, self.space, pool.allocations(self.workload, request))

    def _requeue(self, number: int, reason: str) -> None:
        _fail_and_requeue(self.study, number, reason, handle=self.asked.get(number))

    def _heartbeat(self) -> bool:
        self.last_beat = time.monotonic()
        cur = self.study.user_attrs.get(LEASE) or {}
        if cur.get("token") != self.lease["token"]:
            self.view.event(f"another driver took this study over ({cur.get('host')}:{cur.get('pid')}): stopping")
            return False
        self.lease["beat"] = time.time()
        self.study.set_user_attr(LEASE, self.lease)
        return True


_STOP = threading.Event()  # set by the handler: a KeyboardInterrupt that some library swallows is raised again


def _signals_as_interrupt() -> dict:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt; returns the previous handlers."""
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum, frame):
        _STOP.set()
        raise KeyboardInterrupt

    return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}


def _fail_and_requeue(study, number: int, reason: str, *, requeue: bool = True, handle=None) -> None:
    """Tell a RUNNING trial FAIL with ``reason`` and (unless told not to) enqueue its parameters again.

    ``handle`` is the ``optuna.Trial`` this driver asked; a trial left RUNNING by a dead driver has none, and
    Optuna offers no public way to write to it (``Study.tell`` takes a number but no attributes): its reason
    goes to the study's ``orphan_failures`` record, which :func:`.search.failure_reason` reads.
    """
    from optuna.trial import TrialState

    t = study.get_trials(deepcopy=False)[number]
    if handle is not None:
        handle.set_user_attr(ATTR_FAILURE, reason)
    else:
        orphans = dict(study.user_attrs.get(STUDY_ORPHAN_FAILURES) or {})
        orphans[str(number)] = reason
        study.set_user_attr(STUDY_ORPHAN_FAILURES, orphans)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    if not requeue:
        return
    attrs = {ATTR_RETRY_OF: number}
    for origin in (ATTR_BASELINE, ATTR_WARM_START):  # a retried baseline or warm start keeps its origin
        if t.user_attrs.get(origin) is not None:
            attrs[origin] = t.user_attrs[origin]
    params = _intended_params(t)
    study.enqueue_trial(params, user_attrs={**attrs, ATTR_INTENDED: params})


def _intended_params(t) -> dict:
    """The parameters a trial was meant to run: an enqueued trial's own (recorded when it was enqueued, complete
    even if the driver died before asking all of them) completed by whatever was suggested."""
    return intended_params(t)


def _recover_orphans(study, view: ProgressView) -> None:
    """Trials left RUNNING by a dead driver: FAIL with the reason, parameters tried again.

    A driver killed while asking leaves a trial with only part of its parameters: it never ran, so it is
    not retried (the sampler asks anew); a baseline or warm start still has all of its own.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    names = set().union(*(_intended_params(t) for t in trials)) if trials else set()
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        if names and set(_intended_params(t)) >= names:
            _fail_and_requeue(study, t.number, "the driver stopped before this trial finished; retried as a new trial")
            view.event(f"trial {t.number} was left running by a stopped driver: marked FAIL, parameters enqueued again")
        else:
            why = "the driver stopped while this trial's parameters were being asked; not retried (never ran)"
            _fail_and_requeue(study, t.number, why, requeue=False)
            view.event(f"trial {t.number} was left half-asked by a stopped driver: marked FAIL")


def _acquire_lease(study, spec: StudySpec) -> dict:
    """Refuse to run when another live driver holds the study; otherwise take it."""
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "beat": time.time()}
    cur = study.user_attrs.get(LEASE)
    if cur and _alive(cur):
        raise OrchestratorError(
            f"study {spec.name!r} is being run by another driver (pid {cur['pid']} on {cur['host']}): "
            "wait for it to end or stop it, then run this command again"
        )
    study.set_user_attr(LEASE, mine)
    time.sleep(0.3)  # two drivers starting together: the last writer wins, the other sees it here
    if (study.user_attrs.get(LEASE) or {}).get("token") != mine["token"]:
        raise OrchestratorError(f"study {spec.name!r} was just taken by another driver: not running it twice")
    return mine


def _release_lease(study, lease: dict) -> None:
    try:
        if (study.user_attrs.get(LEASE) or {}).get("token") == lease["token"]:
            study.set_user_attr(LEASE, None)
    except Exception:  # the storage went away: the lease goes stale by itself
        pass


def _alive(lease: dict) -> bool:
    if lease.get("host") == socket.gethostname():
        try:
            os.kill(int(lease["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return int(lease["pid"]) != os.getpid()  # our own pid: a lease an earlier run here failed to release
    return time.time() - float(lease.get("beat", 0)) < LEASE_STALE_S
