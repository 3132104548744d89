"""Addresses inside the MLflow UI (3.x, hash routes) for a study: its trial runs, the parent's Pareto page.

Kept in one place because the run description (tracking) and ``orchestrator ui`` both print them, and the
routes are MLflow's, not ours: when a new MLflow moves them, this is the file to change.
"""

from __future__ import annotations

import json
from itertools import combinations
from urllib.parse import quote, urlencode

from .runs import trials_filter

# MLflow's experiment-kind tag: "custom_model_development" makes the UI open an experiment on its runs
# (the "Machine learning" kind) instead of the GenAI overview of traces it picks for an untagged experiment.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# a run's description, as the UI edits and renders it (markdown)
NOTE_TAG = "mlflow.note.content"

# a runs view (filter, columns, charts) kept in the experiment and opened by ``?viewStateShareKey=``: what the
# UI's own "share view" writes, so a user gets the trials' objectives and charts without building them by hand
SHARED_VIEW_TAG = "mlflow.sharedViewState."
# open the experiment in the UI's "Model training" mode (its side bar and tabs), whatever the browser last used
ML_MODE = "workflowType=machine_learning"

PARETO_PAGE = "pareto/pareto.html"


def _trials_filter(study: str) -> dict[str, str]:
    # filtered to trial runs, the parent does not match: the trials show flat, not folded under a parent row
    return {
        "searchFilter": trials_filter(study),
        "orderByKey": "tags.`mlflow.runName`",  # how the UI itself spells a sort by run name: trial-NNNN order
        "orderByAsc": "true",
    }


def trial_runs_view(experiment_id: str, study: str, shared: bool = False) -> str:
    """The experiment's runs table filtered to the study's trials, in trial order; ``shared``: through the
    study's saved view (columns and charts), once :func:`trials_view_state` is stored."""
    if shared:
        return f"#/experiments/{experiment_id}/runs?viewStateShareKey={share_key(study)}&{ML_MODE}"
    return f"#/experiments/{experiment_id}/runs?{urlencode(_trials_filter(study), quote_via=quote)}&{ML_MODE}"


def share_key(study: str) -> str:
    return f"orchestrator-{study}"


def trials_view_state(study: str, objectives: list[str], metrics: list[str], params: list[str]) -> str:
    """The study's runs view as MLflow's shared-view JSON: trials in order with their objectives, origin and
    epochs as columns; charts: one scatter per objective pair, the parameters' parallel coordinates."""

    def col(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    section = "pruning-study"
    charts: list[dict] = []
    for i, (x, y) in enumerate(combinations(objectives, 2)):
        charts.append(
            {
                "uuid": f"scatter-{i}",
                "type": "SCATTER",
                "xaxis": {"key": y, "type": "METRIC"},
                "yaxis": {"key": x, "type": "METRIC"},
                "runsCountToCompare": 1000,
                "metricSectionId": section,
                "deleted": False,
                "isGenerated": False,
            }
        )
    charts.append(
        {
            "uuid": "parallel",
            "type": "PARALLEL",
            "selectedParams": params,
            "selectedMetrics": objectives,
            "showAllRuns": True,
            "runsCountToCompare": 1000,
            "metricSectionId": section,
            "deleted": False,
            "isGenerated": False,
        }
    )
    state = {
        **_trials_filter(study),
        "selectedColumns": [col("tags", "origin")]
        + [col("metrics", m) for m in dict.fromkeys([*objectives, *metrics])]
        + [col("params", "epochs")],
        "runsHiddenMode": "SHOW_ALL",  # the UI's default charts only the first 10 runs
        "compareRunCharts": charts,
        "compareRunSections": [
            {"uuid": section, "name": f"{study}: objectives", "display": True, "isReordered": False}
        ],
        "hideEmptyCharts": True,
    }
    return json.dumps(state)


def pareto_view(experiment_id: str, parent_run_id: str) -> str:
    """The parent run's interactive Pareto page in MLflow's artifact viewer."""
    return f"#/experiments/{experiment_id}/runs/{parent_run_id}/artifactPath/{PARETO_PAGE}?{ML_MODE}"


def study_note(experiment_id: str, parent_run_id: str, study: str) -> str:
    """The parent run's description: where to look first."""
    return (
        f"Pruning study **{study}**: one nested run per trial (`trial-NNNN`).\n\n"
        f"- [Pareto page]({pareto_view(experiment_id, parent_run_id)}): every trial, the front, the baselines; "
        "hover a point for its trial.\n"
        f"- [Trial runs]({trial_runs_view(experiment_id, study, shared=True)}): all trials at once, in trial order, "
        "with their objectives; its Chart view plots each objective pair and the ratios.\n"
    )
