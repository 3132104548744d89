"""The study loop: Optuna ask -> Ray worker -> Optuna tell -> MLflow, with resume and a clean stop.

The driver sees only specs and results, never a tensor. It is the only writer of the Optuna storage
and of MLflow. Running the same command again resumes: trials a dead driver left RUNNING are told
FAIL and their parameters enqueued again (:mod:`.resume`), finished trials missing from MLflow are logged
(``tracking.publish``), and the loop goes on until ``n_trials`` trials are COMPLETE. A lease in the study's
attributes keeps a second driver off the same study (:mod:`.lease`).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, replace

from ..errors import OrchestratorError
from ..search import (
    ATTR_RATIOS,
    STUDY_ALLOCATIONS,
    STUDY_BASELINE,
    STUDY_WARM_START_ENQUEUED,
    build_space,
    create_or_load,
    enqueue_baselines,
    enqueue_levers,
    enqueue_warm_start,
    hypervolume,
    is_screened,
    level_grid,
    open_storage,
    pareto_front,
    relative_space,
    revealed,
    study_identity,
    trial_summary,
)
from ..study.checks import check_for_run
from ..study.dimensions import trial_values
from ..study.spec import StudySpec
from ..tracking.publish import TrackerSync
from ..tracking.tracker import Tracker, archive_runs, check_identity, preflight
from ..trial.contract import AllocationRequest, TrialResult, TrialSpec, Workload
from .dispatch import Cluster, WorkerPool, connect, disconnect
from .lease import Lease
from .progress import ProgressView, StudyProgress
from .results import (
    checked_values,
    record_failure,
    record_run,
    record_screened,
    record_success,
    screened_values,
    stage_files,
)
from .resume import fail_and_requeue, recover_orphans
from .stopping import stopping_rules


@dataclass(frozen=True)
class StudyOutcome:
    complete: int
    failed: int
    target: int | None
    stopped: str  # "done" | "interrupted" | "timeout" | "failures" | "screened" | "lost lease"
    front: tuple[int, ...]
    hypervolume: float
    tracker_pending: int  # finished trials not yet in MLflow (tracker unreachable)
    screened: int = 0  # stopped by the one-shot screen or early stopping (not in ``complete``)


def run_study(
    spec: StudySpec,
    *,
    n_trials: int | None = None,
    address: str | None = None,
    console=None,
    live: bool | None = None,
    reset_tracking: bool = False,
    allow_large: bool = False,
    stop: threading.Event | None = None,
) -> StudyOutcome:
    """Run (or resume) the study until ``n_trials`` trials are COMPLETE, the timeout passes or Ctrl-C.

    The inputs are checked here, once, before a study, a run or a file is created (``allow_large``: a large
    dataset may be downloaded). ``reset_tracking``: archive the study's MLflow runs first (they belong to a lost
    or replaced Optuna study). ``stop``: set by :func:`.resume.stop_on_signals`, ends the loop as Ctrl-C does.
    """
    for warning in check_for_run(spec, allow_large=allow_large):
        print(f"warning: {warning}", file=sys.stderr)
    preflight(spec)
    study = create_or_load(spec, open_storage(spec.storage))
    lease = Lease.acquire(study, spec)
    view = ProgressView(StudyProgress(spec, n_trials or spec.budget.n_trials), console, live)
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
        try:
            recover_orphans(study, view)
            tracker = Tracker(spec, spec.storage)
            tracker.open(identity)
            return Sweep(spec, study, tracker, cluster, view, lease, stop or threading.Event()).run()
        finally:
            disconnect(cluster)
    finally:
        lease.release()


class Sweep:
    """One run of the loop over one study: ask, dispatch, tell, publish, until a reason to stop."""

    def __init__(
        self,
        spec: StudySpec,
        study,
        tracker: Tracker,
        cluster: Cluster,
        view: ProgressView,
        lease: Lease,
        stop: threading.Event,
    ):
        self.spec, self.study, self.tracker, self.cluster, self.view = spec, study, tracker, cluster, view
        self.lease, self.stop, self.p = lease, stop, view.p
        self.p.slots = cluster.slots
        self.workload = Workload.from_spec(spec)
        self.sync = TrackerSync(spec, study, tracker, view.event)
        self.asked: dict[int, object] = {}  # trial number -> optuna Trial
        self.ready: list[TrialSpec] = []  # asked ahead, waiting for a free slot
        self.baseline_metrics: dict[str, float] = {}
        self.ask_s: float | None = None  # how long study.ask takes (moving average)
        self.failed_here = self.screened_here = 0
        self.started = time.monotonic()

    def run(self) -> StudyOutcome:
        """Prepare the study (baseline, space, enqueued trials), loop, then close MLflow whatever stopped it."""
        pool = WorkerPool(self.cluster, self.spec.trial)
        stopped = "done"
        try:
            self._prepare(pool)
            with self.view:
                self.view.event(
                    f"study {self.spec.name}: {self.p.complete} complete already, "
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
        return self._finish(stopped)

    def _prepare(self, pool: WorkerPool) -> None:
        spec, study = self.spec, self.study
        self.baseline = self._baseline(pool)
        self.space = build_space(spec, list(self.baseline["groups"]))
        if spec.sampler.space == "relative":
            self.space = replace(self.space, relative=self._relative(pool))
        self.dists = self.space.distributions()
        enqueue_baselines(spec, study, self.space)
        enqueue_levers(spec, study, self.space)
        self._warm_start(pool)
        trials = study.get_trials(deepcopy=False)
        self.sync.add(t.number for t in trials if t.state.is_finished())
        front = pareto_front(trials, spec.directions)
        self.sync.sync(trials, front, self.baseline_metrics, force=True)
        self.p.complete = sum(t.state.name == "COMPLETE" and not is_screened(t) for t in trials)
        self.p.screened = sum(is_screened(t) for t in trials)
        self._refresh(trials, front)

    def _finish(self, stopped: str) -> StudyOutcome:
        spec = self.spec
        trials = self.study.get_trials(deepcopy=False)
        front = pareto_front(trials, spec.directions)
        self.sync.sync(trials, front, self.baseline_metrics, force=True)
        try:
            detections = self._detections(front) if stopped != "interrupted" else None
            self.tracker.refresh_front(trials, self.baseline_metrics, force=True, detections=detections)
            self.tracker.log_test(revealed(trials, spec.directions))  # the chosen front, on the held-out split
            self.tracker.finish("FINISHED" if stopped == "done" else "KILLED")
        except Exception as e:  # the Optuna storage has everything: a later run catches up
            self.sync.failed(e)
        return StudyOutcome(
            self.p.complete,
            sum(t.state.name == "FAIL" for t in trials),
            self.p.target,
            stopped,
            tuple(t.number for t in front),
            hypervolume(trials, spec, self.baseline_metrics),
            len(self.sync.pending),
            sum(is_screened(t) for t in trials),
        )

    def _detections(self, front: list):
        """The front's and the unpruned model's detections on a few val images, for the Pareto page (None when the
        trials kept no model: fake trials, ``tracking.artifacts: none``). Never fails the study: the page is
        drawn without them and the reason said in one line."""
        spec = self.spec
        if spec.trial == "fake" or spec.tracking.artifacts == "none" or not front:
            return None
        from ..tracking.runs import download_model
        from ..trial.detections import front_detections

        self.view.event(f"drawing the detections of {len(front)} front trial(s) for the Pareto page ...")
        try:
            found = front_detections(spec, sorted(t.number for t in front), lambda n, d: download_model(spec, n, d))
        except Exception as e:  # a missing base model or data: the page goes without pictures
            self.view.event(f"Pareto page without detections: {type(e).__name__}: {str(e)[:200]}")
            return None
        for n, why in sorted(found.missing.items()):
            self.view.event(f"trial {n}: no detections on the Pareto page ({why[:200]})")
        return found

    def _loop(self, pool: WorkerPool) -> str:
        budget = self.spec.budget
        max_failures = budget.max_failures or max(self.p.target or 0, 10)
        stopped = "done"
        while True:
            if self.stop.is_set():  # the signal's KeyboardInterrupt was lost inside a library call: stop now
                raise KeyboardInterrupt
            if self.lease.due() and not self._heartbeat():
                stopped = "lost lease"
            if budget.timeout_s is not None and time.monotonic() - self.started > budget.timeout_s:
                stopped = "timeout"
            if self.failed_here >= max_failures:
                stopped = "failures"
            if self.screened_here >= 4 * max_failures:  # the space is all under the floor: say so, don't spin
                stopped = "screened"
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
                self._publish()
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
        values = trial_values(params, self.spec.space)
        ratios = trial.user_attrs.get(ATTR_RATIOS) or self.space.trial_ratios(params)
        if self.space.relative and ATTR_RATIOS not in trial.user_attrs:  # status, MLflow and exports read ratios
            trial.set_user_attr(ATTR_RATIOS, ratios)
        rules = stopping_rules(self.spec, trial, self.study, self.baseline_metrics)
        return TrialSpec(trial.number, self.workload, ratios, values, **rules)

    def _tell(self, r: TrialResult) -> None:
        """Record a result in the Optuna storage (the source of truth) and stage its files."""
        from optuna.trial import TrialState

        spec = self.spec
        trial = self.asked.pop(r.number)
        record_run(trial, r)
        values, failure = checked_values(spec, r) if not (r.ok and r.screened) else ([], "")
        if r.ok and r.screened:  # told COMPLETE + a violated constraint: see search.record
            record_screened(trial, r, spec, self.baseline_metrics)
            self.study.tell(trial, screened_values(spec, r, self.baseline_metrics))
            self.p.screened += 1
            self.screened_here += not r.stopped_epoch  # a dead space is one whose cuts fail the screen
            self.view.event(f"trial {r.number} {r.reason} ({r.wall_s:.1f}s)")
        elif values is not None:
            record_success(trial, r, spec, self.baseline_metrics)
            self.study.tell(trial, values)
            self.p.complete += 1
            self.p.durations.append(r.wall_s)
            stage_files(spec, r)
            m = r.metrics
            self.view.event(
                f"trial {r.number} done in {r.wall_s:.1f}s: "
                + ", ".join(f"{o.metric}={m[o.metric]:.4g}" for o in spec.objectives)
            )
        else:
            record_failure(trial, failure)
            self.study.tell(trial, state=TrialState.FAIL)
            self.p.failed += 1
            self.failed_here += 1
            self.view.event(f"trial {r.number} failed: {failure}")
        self.sync.add([r.number])

    def _publish(self) -> None:
        """MLflow runs, Pareto artifacts and the live view for the trials just told: one front for all three."""
        trials = self.study.get_trials(deepcopy=False)
        front = pareto_front(trials, self.spec.directions)
        self.sync.sync(trials, front, self.baseline_metrics)
        self._refresh(trials, front)

    def _refresh(self, trials: list, front: list) -> None:
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
            self.sync.failed(e)
        return stored

    def _warm_start(self, pool: WorkerPool) -> None:
        spec = self.spec
        if spec.sampler.warm_start == "none" or self.study.user_attrs.get(STUDY_WARM_START_ENQUEUED):
            return
        self.view.event(f"computing the {spec.sampler.warm_start} warm start ...")
        groups = {g: list(self.baseline["groups"][g]) for g in self.space.ratios}
        request = AllocationRequest(tuple(spec.baselines.ratios), groups, dict(self.space.ratios), self.space.step)
        enqueue_warm_start(spec, self.study, self.space, pool.allocations(self.workload, request))

    def _relative(self, pool: WorkerPool):
        """The relative space: the warm-start heuristic's allocation at every level, computed once per study by a
        worker and kept in the study record (a resumed driver translates parameters into the same ratios)."""
        stored = self.study.user_attrs.get(STUDY_ALLOCATIONS)
        if stored is None:
            levels = level_grid(self.space.ratios, self.space.step)
            self.view.event(f"computing the {self.spec.sampler.warm_start} allocations at {len(levels)} levels ...")
            groups = {g: list(self.baseline["groups"][g]) for g in self.space.ratios}
            request = AllocationRequest(levels, groups, dict(self.space.ratios), self.space.step)
            stored = {"levels": list(levels), "maps": pool.allocations(self.workload, request)}
            self.study.set_user_attr(STUDY_ALLOCATIONS, stored)
        levels = tuple(stored["levels"])
        return relative_space(stored["maps"], levels, self.space.ratios, self.space.step, self.spec.sampler.offset)

    def _requeue(self, number: int, reason: str) -> None:
        fail_and_requeue(self.study, number, reason, handle=self.asked.get(number))

    def _heartbeat(self) -> bool:
        other = self.lease.beat()
        if other is not None:
            self.view.event(f"another driver took this study over ({other.get('host')}:{other.get('pid')}): stopping")
            return False
        return True
