"""A study's runs in the MLflow store: the one place that builds a client and knows how runs are found again.

Runs are found by their tags (``role``, ``study``, ``trial_number``), never by a remembered id: the tracker, the
identity check, ``pareto`` and ``ui`` all read the store through these filters, so a change of tagging is one
edit here. MLflow is imported inside each function: importing the package must not cost MLflow's start-up.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError
from ..study.spec import StudySpec
from ..urls import mask_url
from .store import local_artifacts

TAG_UID = "optuna_study_uid"  # which Optuna study the runs belong to (search.study_identity)
TAG_CREATED = "optuna_study_created"


def client(spec: StudySpec) -> Any:
    """An ``MlflowClient`` on the study's tracking store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=spec.tracking.uri)


def study_tags(study: str) -> dict[str, str]:
    """The tags a study's parent run is found again by (:func:`parent_filter`)."""
    return {"role": "study", "study": study}


def trial_tags(study: str, number: int) -> dict[str, str]:
    """The tags a trial's run is found again by (:func:`trials_filter`)."""
    return {"role": "trial", "study": study, "trial_number": str(number)}


def parent_filter(study: str) -> str:
    """The search filter matching the study's parent run."""
    return f"tags.role = 'study' and tags.study = '{study}'"


def trials_filter(study: str, number: int | None = None) -> str:
    """The search filter matching the study's trial runs (one trial's with ``number``); the UI's runs view
    uses it too, so the parent never shows among the trials."""
    flt = f"tags.role = 'trial' and tags.study = '{study}'"
    return flt if number is None else f"{flt} and tags.trial_number = '{number}'"


def search_all(c: Any, experiment_id: str, flt: str) -> list:
    """Every run matching ``flt``, page after page (a study may have more trials than one page holds)."""
    out, token = [], None
    while True:
        page = c.search_runs([experiment_id], filter_string=flt, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


@dataclass(frozen=True)
class StudyRuns:
    """Where a study stands in the store: its experiment and, once a run started, its parent run."""

    experiment_id: str
    experiment_tags: dict[str, str]
    parent_id: str | None
    parent_tags: dict[str, str]


def find_study(spec: StudySpec, c: Any = None) -> StudyRuns | None:
    """The study's experiment and parent run as the store has them (None before its experiment exists)."""
    c = c or client(spec)
    exp = c.get_experiment_by_name(spec.experiment)
    if exp is None:
        return None
    parents = c.search_runs([exp.experiment_id], filter_string=parent_filter(spec.name), max_results=1)
    parent = parents[0] if parents else None
    return StudyRuns(
        exp.experiment_id,
        dict(exp.tags),
        parent.info.run_id if parent else None,
        dict(parent.data.tags) if parent else {},
    )


def open_experiment(c: Any, spec: StudySpec) -> str:
    """The study's experiment id: created (artifacts under ``tracking.artifact_location``) or restored."""
    exp = c.get_experiment_by_name(spec.experiment)
    if exp is None:
        location = None
        if local_artifacts(spec):
            location = (Path(spec.tracking.artifact_location).resolve() / spec.experiment).as_uri()
        return c.create_experiment(spec.experiment, artifact_location=location)
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def check_identity(spec: StudySpec, identity: dict[str, str], stored: int) -> None:
    """Stop in one line when MLflow's runs of this study belong to another Optuna study (read-only).

    Trial runs are found again by study name and trial number: after the Optuna storage is lost or replaced,
    the new study's trial 0 would land in the old trial 0's run. ``stored``: trials in the storage's study.
    """
    c = client(spec)
    found = find_study(spec, c)
    if found is None or found.parent_id is None:
        return
    tags = found.parent_tags
    known = tags.get(TAG_UID)
    if known == identity.get("uid"):
        return
    if known is None:  # runs logged before identities: the storage must at least hold every trial MLflow has
        runs = c.search_runs([found.experiment_id], trials_filter(spec.name))
        numbers = [int(r.data.tags.get("trial_number", -1)) for r in runs]
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
    c = client(spec)
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


def _trial_runs(c: Any, spec: StudySpec, number: int) -> list:
    exp = c.get_experiment_by_name(spec.experiment)
    return c.search_runs([exp.experiment_id], trials_filter(spec.name, number)) if exp else []


def log_held_out(c: Any, run_ids: dict[int, list[str]], figures: dict[int, dict[str, float]]) -> None:
    """Held-out figures (holdout.revealed: the front and the uniform baselines) on the runs of their trials;
    a trial without a run yet (tracker outage) gets them when the next run's end logs them again."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    for n, metrics in sorted(figures.items()):
        for run_id in run_ids.get(n, ()):
            c.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()], tags=[])


def log_held_out_figures(spec: StudySpec, figures: dict[int, dict[str, float]]) -> None:
    """``pareto --test``'s figures on each trial's run, found by its study and trial-number tags."""
    c = client(spec)
    if c.get_experiment_by_name(spec.experiment) is None:
        return
    log_held_out(c, {n: [r.info.run_id for r in _trial_runs(c, spec, n)] for n in figures}, figures)


def trial_run_id(spec: StudySpec, number: int, c: Any = None) -> str:
    """The MLflow run of trial ``number``; one error line when the store has none (a rebuilt store not caught up)."""
    runs = _trial_runs(c or client(spec), spec, number)
    if not runs:
        raise OrchestratorError(
            f"trial {number} has no run in MLflow at {mask_url(spec.tracking.uri)}: "
            f"run `orchestrator run {spec.path}` once to catch the tracker up"
        )
    return runs[0].info.run_id


def download_model(spec: StudySpec, number: int, target: Path) -> list[Path]:
    """The trial's ``model/`` artifacts downloaded into ``target`` (created); stops in one line when the trial
    has no run (a rebuilt store not caught up) or kept no checkpoint."""
    c = client(spec)
    run_id = trial_run_id(spec, number, c)
    target.mkdir(parents=True, exist_ok=True)
    names = [a.path for a in c.list_artifacts(run_id, "model")]
    if not names:
        raise OrchestratorError(
            f"trial {number} has no saved checkpoint (tracking.artifacts is "
            f"{spec.tracking.artifacts!r}; use 'pareto' or 'all')"
        )
    files = [Path(c.download_artifacts(run_id, n, str(target))) for n in names]
    return [target / Path(f).name if not f.parent == target else f for f in files]
