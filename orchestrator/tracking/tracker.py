"""MLflow view of a study: one experiment, a parent run, one nested run per finished trial, Pareto artifacts.

The Optuna storage is the source of truth; MLflow is rebuilt from it. A trial's run is found again by
its tags (``study``, ``trial_number``) and only counts as logged once terminated (FINISHED/FAILED), so a
crash mid-logging or a tracker outage is caught up later into the same run: nothing is logged twice.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..search import (
    ATTR_BASELINE,
    ATTR_DEVICE,
    ATTR_HISTORY,
    ATTR_METRICS,
    ATTR_RATIOS,
    ATTR_TEST,
    ATTR_WALL,
    ATTR_WORKER,
    failure_reason,
    hypervolume_history,
    origin,
    pareto_front,
    state_of,
    trial_summary,
)
from ..study.dimensions import parameter_names, ratio_params
from ..study.metrics import SUMMARY_METRICS, TEST_METRICS
from ..study.spec import StudySpec
from ..urls import mask_url
from .batch import RunWriter
from .links import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    SHARED_VIEW_TAG,
    share_key,
    study_note,
    trials_view_state,
)
from .pareto_page import PageDetections, pareto_page, write_detections
from .plots import front_plots, hypervolume_plot
from .runs import (
    TAG_CREATED,
    TAG_UID,
    archive_runs,
    check_identity,
    client,
    log_held_out,
    open_experiment,
    parent_filter,
    search_all,
    study_tags,
    trial_tags,
    trials_filter,
)
from .store import artifacts_left, drop_staged, preflight, staging_dir, trial_marker

# the driver's door into tracking: the tracker and the checks it runs around it
__all__ = [
    "TAG_CREATED",
    "TAG_UID",
    "Tracker",
    "archive_runs",
    "check_identity",
    "drop_staged",
    "pareto_csv",
    "preflight",
    "staging_dir",
]

_PARENT_PARENT_TAG = "mlflow.parentRunId"


class Tracker:
    """The study's MLflow experiment; every call is safe to repeat."""

    def __init__(self, spec: StudySpec, storage_url: str):
        self.spec = spec
        self.storage_url = storage_url
        # URLs whose passwords may reach a param, a tag or the logged study file in any spelling
        self._urls = (storage_url, spec.storage, spec.tracking.uri, spec.model, spec.data)
        self.client = client(spec)
        self._write = RunWriter(self.client, self._urls)
        self.experiment_id = ""
        self.parent_id = ""
        self.runs: dict[int, Any] = {}  # trial number -> RunInfo of its nested run
        self.identity: dict[str, str] = {}
        self.lost: list[int] = []  # trials whose checkpoint was neither staged nor found in the artifact folder
        self._last_refresh = 0.0

    # ---------------------------------------------------------------- study
    def open(self, identity: dict[str, str] | None = None) -> None:
        """Find or create the experiment and the study's parent run; index the trial runs already there.

        ``identity`` (search.study_identity) is recorded on the parent and every trial run; trial runs of
        another identity are never reused (:func:`check_identity` stops the run before that).
        """
        c, spec = self.client, self.spec
        self.identity = dict(identity or {})
        id_tags = {TAG_UID: self.identity["uid"], TAG_CREATED: self.identity["created"]} if self.identity else {}
        self.experiment_id = open_experiment(c, spec)
        # a model-training experiment: the UI opens on its runs, not on the GenAI overview (no traces here)
        c.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        mine = self._search(parent_filter(spec.name))
        if mine:
            self.parent_id = mine[0].info.run_id
            c.update_run(self.parent_id, status="RUNNING")
            if id_tags and TAG_UID not in mine[0].data.tags:  # runs from before identities: adopted once checked
                for k, v in id_tags.items():
                    c.set_tag(self.parent_id, k, v)
        else:
            run = c.create_run(
                self.experiment_id,
                run_name=spec.name,
                tags={
                    **study_tags(spec.name),
                    "git_commit": _git_commit(),
                    "storage": mask_url(self.storage_url, *self._urls),
                    **id_tags,
                },
            )
            self.parent_id = run.info.run_id
            self._write.params(self.parent_id, _flatten(_study_dict(spec)))
        c.set_tag(self.parent_id, NOTE_TAG, study_note(self.experiment_id, self.parent_id, spec.name))
        self._write.text(self.parent_id, mask_url(spec.text, *self._urls), "study.yaml")
        for r in self._search(trials_filter(spec.name)):
            if r.data.tags.get(TAG_UID, self.identity.get("uid")) != self.identity.get("uid"):
                continue  # another study's run under this name: never reused
            n = int(r.data.tags.get("trial_number", -1))
            if n >= 0 and (n not in self.runs or r.info.status in ("FINISHED", "FAILED")):
                self.runs[n] = r.info

    def log_baseline(self, metrics: dict[str, float], device: str) -> None:
        ts = int(time.time() * 1000)
        self._write.batch(
            self.parent_id,
            metrics={f"baseline_{k}": v for k, v in metrics.items()},
            ts=ts,
            tags={"baseline_device": device},
        )

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # ---------------------------------------------------------------- trials
    def is_logged(self, number: int) -> bool:
        info = self.runs.get(number)
        return info is not None and info.status in ("FINISHED", "FAILED")

    def log_trial(self, trial, files: Path | None, keep_files: bool, failure: str = "") -> bool:
        """Log one finished Optuna trial into its nested run (created or reused); False if already logged.

        ``failure``: :func:`.search.failure_reason` with the study's attributes (a trial left RUNNING by a dead
        driver carries no reason of its own); without it, the trial's own."""
        n = trial.number
        if self.is_logged(n):
            return False
        c = self.client
        info = self.runs.get(n)
        if info is None:
            # A signal can land after create_run committed but before we kept its id: look before creating.
            found = self._search(trials_filter(self.spec.name, n))
            if found:
                info = self.runs[n] = found[0].info
                if self.is_logged(n):
                    return False
        if info is None:
            run = c.create_run(
                self.experiment_id,
                run_name=f"trial-{n:04d}",
                start_time=_ms(trial.datetime_start),
                tags={
                    _PARENT_PARENT_TAG: self.parent_id,
                    **trial_tags(self.spec.name, n),
                    **({TAG_UID: self.identity["uid"]} if self.identity else {}),
                },
            )
            info = run.info
            self.runs[n] = info
        ua = trial.user_attrs
        ts = _ms(trial.datetime_complete) or int(time.time() * 1000)
        metrics = {k: float(v) for k, v in ua.get(ATTR_METRICS, {}).items()}
        if ua.get(ATTR_WALL) is not None:
            metrics["wall_s"] = float(ua[ATTR_WALL])
        history = ua.get(ATTR_HISTORY, [])
        tags = {"state": state_of(trial), "device": ua.get(ATTR_DEVICE, ""), "worker": ua.get(ATTR_WORKER, "")}
        failure = failure or failure_reason(trial)
        if failure:
            tags["failure_reason"] = failure[:5000]
        if ua.get(ATTR_BASELINE) is not None:
            tags["uniform_ratio"] = str(ua[ATTR_BASELINE])
        tags["origin"] = origin(trial)
        params = {k: v for k, v in trial.params.items()}
        if ua.get(ATTR_RATIOS):  # relative space: the ratios the trial ran, beside its level and offsets
            params.update(ratio_params(ua[ATTR_RATIOS]))
        self._write.params(info.run_id, params)
        self._write.batch(info.run_id, metrics=metrics, ts=ts, tags=tags, history=history)
        if keep_files and (files is None or not files.is_dir() or not any(files.iterdir())):
            uid = self.identity.get("uid", "")
            files = artifacts_left(self.spec, uid, n) if trial.state.name == "COMPLETE" else None
            if files is None and trial.state.name == "COMPLETE":
                self.lost.append(n)
        if keep_files and files is not None:
            c.log_artifacts(info.run_id, str(files), artifact_path="model")
            if self.identity:  # lets a rebuilt MLflow store find this checkpoint again (store.artifacts_left)
                self._write.text(info.run_id, trial_marker(self.identity["uid"], n), "trial.json")
        status = "FINISHED" if trial.state.name == "COMPLETE" else "FAILED"
        c.set_terminated(info.run_id, status=status, end_time=ts)
        self.runs[n] = c.get_run(info.run_id).info
        return True

    def log_test(self, figures: dict[int, dict[str, float]]) -> None:
        """Held-out figures (holdout.revealed: the front and the uniform baselines) on their trial runs."""
        log_held_out(self.client, {n: [info.run_id] for n, info in self.runs.items()}, figures)

    def refresh_front(
        self, trials: list, baseline: dict[str, float], force: bool = False, detections: PageDetections | None = None
    ) -> bool:
        """Re-log the parent's pareto.csv, plots and hypervolume (at most once per ``tracking.refresh_s``);
        ``detections`` (the study's end): annotated images on the page and under ``pareto/detections/``."""
        now = time.monotonic()
        if not force and now - self._last_refresh < self.spec.tracking.refresh_s:
            return False
        self._last_refresh = now
        spec = self.spec
        front = pareto_front(trials, spec.directions)
        hv = hypervolume_history(trials, spec, baseline)
        with tempfile.TemporaryDirectory(prefix="pareto-") as tmp:
            out = Path(tmp)
            (out / "pareto.csv").write_text(pareto_csv(front, spec))
            front_plots(trials, front, spec, baseline, out)
            pareto_page(trials, front, spec, baseline, out / "pareto.html", detections=detections)
            if detections is not None:
                write_detections(detections, out / "detections")
            hypervolume_plot(hv, out / "hypervolume.png")
            self.client.log_artifacts(self.parent_id, tmp, artifact_path="pareto")
        self._store_trials_view(trials)
        if hv:
            n_done = sum(1 for t in trials if t.state.is_finished())
            self._write.batch(
                self.parent_id,
                metrics={"hypervolume": hv[-1][1], "pareto_size": len(front)},
                ts=int(time.time() * 1000),
                step=n_done,
            )
        return True

    def _store_trials_view(self, trials: list) -> None:
        """The study's saved runs view (columns and charts over the metrics and parameters trials have now)."""
        objectives = [o.metric for o in self.spec.objectives]
        metrics = sorted({k for t in trials for k in t.user_attrs.get(ATTR_METRICS, {})})
        params = sorted({k for t in trials for k in t.params})
        state = trials_view_state(self.spec.name, objectives, [m for m in SUMMARY_METRICS if m in metrics], params)
        self.client.set_experiment_tag(self.experiment_id, SHARED_VIEW_TAG + share_key(self.spec.name), state)

    # ---------------------------------------------------------------- plumbing
    def _search(self, flt: str) -> list:
        return search_all(self.client, self.experiment_id, flt)


def pareto_csv(front: list, spec: StudySpec) -> str:
    buf = io.StringIO()
    metrics = list(dict.fromkeys([o.metric for o in spec.objectives] + list(SUMMARY_METRICS)))
    w = csv.writer(buf)
    dims = parameter_names(spec.space)
    # front trials are revealed by definition: their held-out figures sit beside the val ones
    tests = list(TEST_METRICS) if any(t.user_attrs.get(ATTR_TEST) for t in front) else []
    w.writerow(["trial", "origin", "uniform_ratio", *metrics, *tests, *dims, "ratios"])
    for t in sorted(front, key=lambda t: t.number):
        s = trial_summary(t)
        w.writerow(
            [
                t.number,
                s["origin"],
                s["uniform_ratio"] if s["uniform_ratio"] is not None else "",
                *[s["metrics"].get(m, "") for m in metrics],
                *[(t.user_attrs.get(ATTR_TEST) or {}).get(k, "") for k in tests],
                *[s["dimensions"][d] for d in dims],
                json.dumps(s["ratios"], sort_keys=True),
            ]
        )
    return buf.getvalue()


def _study_dict(spec: StudySpec) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(spec.text) or {}
    except yaml.YAMLError:
        raw = {}
    return raw if isinstance(raw, dict) else {}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | dict) else v
    return out


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _ms(dt) -> int | None:
    return int(dt.timestamp() * 1000) if dt is not None else None
