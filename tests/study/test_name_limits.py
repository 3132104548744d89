"""The name limits the study file states are the stores' real ones, measured on the installed MLflow and file system.

A study name or experiment name past them passed ``check`` and then failed inside ``run`` (MLflow's 500-character
experiment names, its 250-character tag keys, the file system's 255-byte names), or worse, every trial's logging
failed quietly. Here each limit is tried at the edge and one past it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.study.spec import FILE_NAME_LIMIT, MAX_EXPERIMENT, MAX_NAME, MLFLOW_KEY_LIMIT, VIEW_TAG_PREFIX
from orchestrator.tracking.links import SHARED_VIEW_TAG, share_key


def test_the_view_tag_is_the_longest_key_a_study_name_is_in():
    assert SHARED_VIEW_TAG + share_key("x") == VIEW_TAG_PREFIX + "x"
    assert len(VIEW_TAG_PREFIX) + MAX_NAME == MLFLOW_KEY_LIMIT


def test_mlflow_holds_the_longest_names_and_refuses_one_more(tmp_path: Path):
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = "e" * MAX_EXPERIMENT
    exp_id = c.create_experiment(experiment, artifact_location=(tmp_path / "art" / experiment).as_uri())
    c.set_experiment_tag(exp_id, VIEW_TAG_PREFIX + "n" * MAX_NAME, "{}")  # the study's shared view: accepted
    with pytest.raises(MlflowException, match=f"exceeds the maximum length of {MLFLOW_KEY_LIMIT}"):
        c.set_experiment_tag(exp_id, VIEW_TAG_PREFIX + "n" * (MAX_NAME + 1), "{}")
    run = c.create_run(exp_id, run_name="n" * MAX_NAME, tags={"study": "n" * MAX_NAME})
    c.log_artifact(run.info.run_id, str(_file(tmp_path / "f.txt")))  # the artifact folder is a name it can hold
    assert (tmp_path / "art" / experiment / run.info.run_id / "artifacts" / "f.txt").is_file()


def test_the_file_system_holds_the_longest_folder_names_and_refuses_one_more(tmp_path: Path):
    """mlruns/staging/<name> and artifact_location/<experiment> are folders named after the study."""
    assert max(MAX_NAME, MAX_EXPERIMENT) == FILE_NAME_LIMIT == os.pathconf(tmp_path, "PC_NAME_MAX")
    (tmp_path / ("s" * MAX_NAME)).mkdir()
    (tmp_path / ("e" * MAX_EXPERIMENT)).mkdir()
    with pytest.raises(OSError) as e:
        (tmp_path / ("e" * (FILE_NAME_LIMIT + 1))).mkdir()
    assert e.value.errno == errno.ENAMETOOLONG


def _file(path: Path) -> Path:
    path.write_text("x")
    return path
