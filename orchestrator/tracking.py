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

from .errors import OrchestratorError
from .mlflow_links import (
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
from .search import (
    ATTR_BASELINE,
    ATTR_DEVICE,
    ATTR_FAILURE,
    ATTR_HISTORY,
    ATTR_METRICS,
    ATTR_WALL,
    ATTR_WORKER,
    hypervolume_history,
    origin,
    pareto_front,
    trial_summary,
)
from .spec import StudySpec
from .urls import mask_url

_PARENT_PARENT_TAG = "mlflow.parentRunId"
SUMMARY_METRICS = ("map50_95", "params", "gflops")  # shown beside the objectives (CSV, runs view)


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
        self._last_refresh = 0.0

    # ---------------------------------------------------------------- study
    def open(self) -> None:
        """Find or create the experiment and the study's parent run; index the trial runs already there."""
        c, spec = self.client, self.spec
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
        else:
            run = c.create_run(
                self.experiment_id,
                run_name=spec.name,
                tags={
                    "role": "study",
                    "study": spec.name,
                    "git_commit": _git_commit(),
                    "storage": mask_url(self.storage_url, *self._urls),
                },
            )
            self.parent_id = run.info.run_id
            self._log_params(self.parent_id, _flatten(_study_dict(spec)))
        c.set_tag(self.parent_id, NOTE_TAG, study_note(self.experiment_id, self.parent_id, spec.name))
        self._log_text(self.parent_id, mask_url(spec.text, *self._urls), "study.yaml")
        for r in self._search(f"tags.role = 'trial' and tags.study = '{spec.name}'"):
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

    def log_trial(self, trial, files: Path | None, keep_files: bool) -> bool:
        """Log one finished Optuna trial into its nested run (created or reused); False if already logged."""
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
        if ua.get(ATTR_FAILURE):
            tags["failure_reason"] = ua[ATTR_FAILURE][:5000]
        if ua.get(ATTR_BASELINE) is not None:
            tags["uniform_ratio"] = str(ua[ATTR_BASELINE])
        tags["origin"] = origin(trial)
        self._log_params(info.run_id, {k: v for k, v in trial.params.items()})
        self._log_batch(info.run_id, metrics=metrics, ts=ts, tags=tags, history=history)
        if keep_files and files is not None and files.is_dir() and any(files.iterdir()):
            c.log_artifacts(info.run_id, str(files), artifact_path="model")
        status = "FINISHED" if trial.state.name == "COMPLETE" else "FAILED"
        c.set_terminated(info.run_id, status=status, end_time=ts)
        self.runs[n] = c.get_run(info.run_id).info
        return True

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
    w.writerow(["trial", "origin", "uniform_ratio", *metrics, "epochs", "lr0", "ratios"])
    for t in sorted(front, key=lambda t: t.number):
        s = trial_summary(t)
        w.writerow(
            [
                t.number,
                s["origin"],
                s["uniform_ratio"] if s["uniform_ratio"] is not None else "",
                *[s["metrics"].get(m, "") for m in metrics],
                s["epochs"],
                s["lr0"],
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
