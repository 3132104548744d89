"""MLflow view of a study: one experiment, a parent run, one nested run per finished trial, Pareto artifacts.

The Optuna storage is the source of truth; MLflow is rebuilt from it. A trial's run is found again by
its tags (``study``, ``trial_number``) and only counts as logged once terminated (FINISHED/FAILED), so a
crash mid-logging or a tracker outage is caught up later into the same run: nothing is logged twice.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError
from ..search import (
    ATTR_BASELINE,
    ATTR_DEVICE,
    ATTR_HISTORY,
    ATTR_METRICS,
    ATTR_TEST,
    ATTR_WALL,
    ATTR_WORKER,
    failure_reason,
    hypervolume_history,
    origin,
    pareto_front,
    trial_summary,
)
from ..study.dimensions import parameter_names
from ..study.metrics import SUMMARY_METRICS, TEST_METRICS
from ..study.spec import StudySpec
from ..urls import mask_url
from .links import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    SHARED_VIEW_TAG,
    share_key,
    study_note,
    trials_view_state,
)
from .pareto_page import pareto_page
from .plots import front_plots, hypervolume_plot

_PARENT_PARENT_TAG = "mlflow.parentRunId"
TAG_UID = "optuna_study_uid"  # which Optuna study the runs belong to (search.study_identity)
TAG_CREATED = "optuna_study_created"


def preflight(spec: StudySpec) -> None:
    """Fail in one line before any trial if the tracker or the artifact folder cannot be used."""
    uri = spec.tracking.uri
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as r:
                r.read()
        except Exception as e:
            raise OrchestratorError(
                f"the MLflow tracking server {mask_url(uri)} does not answer ({mask_url(str(e), uri)[:120]}): "
                "start it or fix tracking.uri"
            ) from None
    elif uri.startswith("sqlite:///"):
        _writable(Path(uri[len("sqlite:///") :]).parent, "tracking.uri")
    if _local_artifacts(spec):
        _writable(Path(spec.tracking.artifact_location), "tracking.artifact_location")


def _writable(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OrchestratorError(f"{key}: cannot write to {folder} ({e.strerror or e}): fix its permissions") from None


def _local_artifacts(spec: StudySpec) -> bool:
    loc = spec.tracking.artifact_location
    return not spec.tracking.uri.startswith(("http://", "https://", "databricks")) and "://" not in loc


def staging_dir(spec: StudySpec) -> Path:
    """Where trial files wait until they are logged (kept while the tracker is unreachable)."""
    return Path(spec.tracking.artifact_location).parent / "staging" / spec.name


def check_identity(spec: StudySpec, identity: dict[str, str], stored: int) -> None:
    """Stop in one line when MLflow's runs of this study belong to another Optuna study (read-only).

    Trial runs are found again by study name and trial number: after the Optuna storage is lost or replaced,
    the new study's trial 0 would land in the old trial 0's run. ``stored``: trials in the storage's study.
    """
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=spec.tracking.uri)
    exp = c.get_experiment_by_name(spec.experiment)
    if exp is None:
        return
    parents = c.search_runs([exp.experiment_id], f"tags.role = 'study' and tags.study = '{spec.name}'", max_results=1)
    if not parents:
        return
    tags = parents[0].data.tags
    known = tags.get(TAG_UID)
    if known == identity.get("uid"):
        return
    if known is None:  # runs logged before identities: the storage must at least hold every trial MLflow has
        flt = f"tags.role = 'trial' and tags.study = '{spec.name}'"
        numbers = [int(r.data.tags.get("trial_number", -1)) for r in c.search_runs([exp.experiment_id], flt)]
        if not numbers or max(numbers) < stored:
            return
        what = f"has trial runs up to {max(numbers)} but the Optuna storage's study has {stored} trials"
    else:
        now = f"created {identity.get('created', '?')} (uid {identity.get('uid', '?')[:8]})"
        what = (
            f"belongs to the Optuna study created {tags.get(TAG_CREATED, '?')} (uid {known[:8]}), but the storage "
            f"{mask_url(spec.storage)} holds one {now}"
        )
    raise OrchestratorError(
        f"MLflow experiment {spec.experiment!r} of study {spec.name!r} {what}: the storage was replaced or lost, "
        f"and runs are never reused across studies. Restore the storage, set a new tracking.experiment, or run "
        f"`orchestrator run {spec.path} --reset-tracking` to archive the old runs"
    )


def archive_runs(spec: StudySpec) -> int:
    """Detach the study's MLflow runs (parent and trials) from its name, kept and marked archived; how many."""
    import datetime

    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=spec.tracking.uri)
    exp = c.get_experiment_by_name(spec.experiment)
    if exp is None:
        return 0
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    runs = c.search_runs([exp.experiment_id], f"tags.study = '{spec.name}'", max_results=50000)
    for r in runs:
        old = r.data.tags.get("mlflow.runName") or r.info.run_name or ""
        c.set_tag(r.info.run_id, "study", f"{spec.name}~archived-{stamp}")
        c.set_tag(r.info.run_id, "archived", f"--reset-tracking at {stamp}")
        c.set_tag(r.info.run_id, "mlflow.runName", f"{old} (archived {stamp})")
    return len(runs)


class Tracker:
    """The study's MLflow experiment; every call is safe to repeat."""

    def __init__(self, spec: StudySpec, storage_url: str):
        from mlflow.tracking import MlflowClient

        self.spec = spec
        self.storage_url = storage_url
        # URLs whose passwords may reach a param, a tag or the logged study file in any spelling
        self._urls = (storage_url, spec.storage, spec.tracking.uri, spec.model, spec.data)
        self.client = MlflowClient(tracking_uri=spec.tracking.uri)
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
        exp = c.get_experiment_by_name(spec.experiment)
        if exp is None:
            location = None
            if _local_artifacts(spec):
                location = (Path(spec.tracking.artifact_location).resolve() / spec.experiment).as_uri()
            self.experiment_id = c.create_experiment(spec.experiment, artifact_location=location)
        else:
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        # a model-training experiment: the UI opens on its runs, not on the GenAI overview (no traces here)
        c.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        parents = self._search("tags.role = 'study'")
        mine = [r for r in parents if r.data.tags.get("study") == spec.name]
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
                    "role": "study",
                    "study": spec.name,
                    "git_commit": _git_commit(),
                    "storage": mask_url(self.storage_url, *self._urls),
                    **id_tags,
                },
            )
            self.parent_id = run.info.run_id
            self._log_params(self.parent_id, _flatten(_study_dict(spec)))
        c.set_tag(self.parent_id, NOTE_TAG, study_note(self.experiment_id, self.parent_id, spec.name))
        self._log_text(self.parent_id, mask_url(spec.text, *self._urls), "study.yaml")
        for r in self._search(f"tags.role = 'trial' and tags.study = '{spec.name}'"):
            if r.data.tags.get(TAG_UID, self.identity.get("uid")) != self.identity.get("uid"):
                continue  # another study's run under this name: never reused
            n = int(r.data.tags.get("trial_number", -1))
            if n >= 0 and (n not in self.runs or r.info.status in ("FINISHED", "FAILED")):
                self.runs[n] = r.info

    def log_baseline(self, metrics: dict[str, float], device: str) -> None:
        ts = int(time.time() * 1000)
        self._log_batch(
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
            flt = f"tags.role = 'trial' and tags.study = '{self.spec.name}' and tags.trial_number = '{n}'"
            found = self._search(flt)
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
                    "role": "trial",
                    "study": self.spec.name,
                    "trial_number": str(n),
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
        tags = {"state": trial.state.name, "device": ua.get(ATTR_DEVICE, ""), "worker": ua.get(ATTR_WORKER, "")}
        failure = failure or failure_reason(trial)
        if failure:
            tags["failure_reason"] = failure[:5000]
        if ua.get(ATTR_BASELINE) is not None:
            tags["uniform_ratio"] = str(ua[ATTR_BASELINE])
        tags["origin"] = origin(trial)
        self._log_params(info.run_id, {k: v for k, v in trial.params.items()})
        self._log_batch(info.run_id, metrics=metrics, ts=ts, tags=tags, history=history)
        if keep_files and (files is None or not files.is_dir() or not any(files.iterdir())):
            files = self._artifacts_left(n) if trial.state.name == "COMPLETE" else None
            if files is None and trial.state.name == "COMPLETE":
                self.lost.append(n)
        if keep_files and files is not None:
            c.log_artifacts(info.run_id, str(files), artifact_path="model")
            if self.identity:  # lets a rebuilt MLflow store find this checkpoint again (_artifacts_left)
                self._log_text(info.run_id, json.dumps({"uid": self.identity["uid"], "trial": n}), "trial.json")
        status = "FINISHED" if trial.state.name == "COMPLETE" else "FAILED"
        c.set_terminated(info.run_id, status=status, end_time=ts)
        self.runs[n] = c.get_run(info.run_id).info
        return True

    def log_test(self, figures: dict[int, dict[str, float]]) -> None:
        """Held-out figures (holdout.revealed: the front and the uniform baselines) on their trial runs."""
        ts = int(time.time() * 1000)
        for n, metrics in sorted(figures.items()):
            info = self.runs.get(n)
            if info is not None:  # not logged yet (tracker outage): the next run's end logs it
                self._log_batch(info.run_id, metrics=metrics, ts=ts)

    def refresh_front(self, trials: list, baseline: dict[str, float], force: bool = False) -> bool:
        """Re-log the parent's pareto.csv, plots and hypervolume (at most once per ``tracking.refresh_s``)."""
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
            pareto_page(trials, front, spec, baseline, out / "pareto.html")
            hypervolume_plot(hv, out / "hypervolume.png")
            self.client.log_artifacts(self.parent_id, tmp, artifact_path="pareto")
        self._store_trials_view(trials)
        if hv:
            n_done = sum(1 for t in trials if t.state.is_finished())
            self._log_batch(
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

    def _artifacts_left(self, number: int) -> Path | None:
        """The ``model/`` folder an earlier run of this trial left in the local artifact store, if any.

        After ``mlflow.db`` is lost the runs are rebuilt from the Optuna storage with new run ids; their
        checkpoints are still on disk under the old ids, each run marked by its ``trial.json``.
        """
        if not _local_artifacts(self.spec) or not self.identity:
            return None
        root = Path(self.spec.tracking.artifact_location) / self.spec.experiment
        want = {"uid": self.identity["uid"], "trial": number}
        for marker in root.glob("*/artifacts/trial.json"):
            try:
                found = json.loads(marker.read_text()) == want
            except (OSError, ValueError):
                continue
            model = marker.parent / "model"
            if found and model.is_dir() and any(model.iterdir()):
                return model
        return None

    # ---------------------------------------------------------------- plumbing
    def _search(self, flt: str) -> list:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, mask_url(str(v), *self._urls)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def _log_batch(
        self,
        run_id: str,
        *,
        metrics: dict[str, float],
        ts: int,
        tags: dict[str, str] | None = None,
        history: list[dict[str, float]] = (),
        step: int = 0,
    ) -> None:
        from mlflow.entities import Metric, RunTag

        ms = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for epoch, rec in enumerate(history):
            ms.extend(Metric(f"epoch_{k}", float(v), ts, epoch) for k, v in rec.items() if _is_num(v))
        tg = [RunTag(k, mask_url(str(v), *self._urls)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(ms), 1), 1000):
            self.client.log_batch(run_id, metrics=ms[i : i + 1000], tags=tg if i == 0 else [])

    def _log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)


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


def drop_staged(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


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


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
