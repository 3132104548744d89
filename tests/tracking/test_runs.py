"""A study's runs are found in one way: tracking/runs.py alone builds a client and spells a filter, the tags it
writes are the ones its filters find, and ``pareto --test``'s figures reach the trial's own run only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from study_files import fake_study

from orchestrator.study.file import load_study_spec
from orchestrator.tracking.runs import (
    client,
    find_study,
    log_held_out_figures,
    parent_filter,
    search_all,
    study_tags,
    trial_tags,
    trials_filter,
)

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"


@pytest.mark.parametrize("needle", ["MlflowClient(", "tags.role =", "tags.trial_number ="])
def test_only_runs_builds_a_client_or_spells_a_filter(needle):
    holders = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if re.search(re.escape(needle), p.read_text())
    )
    assert holders == ["tracking/runs.py"]


def test_the_tags_written_are_the_tags_found(tmp_path):
    spec = load_study_spec(fake_study(tmp_path))
    c = client(spec)
    assert find_study(spec, c) is None  # no experiment yet
    exp = c.create_experiment(spec.experiment)
    parent = c.create_run(exp, tags=study_tags(spec.name)).info.run_id
    runs = {n: c.create_run(exp, tags=trial_tags(spec.name, n)).info.run_id for n in (0, 1, 10)}
    c.create_run(exp, tags=trial_tags("another", 1))

    found = find_study(spec, c)
    assert (found.experiment_id, found.parent_id) == (exp, parent)
    assert {r.info.run_id for r in search_all(c, exp, trials_filter(spec.name))} == set(runs.values())
    assert [r.info.run_id for r in search_all(c, exp, trials_filter(spec.name, 1))] == [runs[1]]
    assert [r.info.run_id for r in search_all(c, exp, parent_filter(spec.name))] == [parent]

    log_held_out_figures(spec, {1: {"test_map50_95": 0.25}, 7: {"test_map50_95": 0.5}})  # 7: no run, skipped
    assert {n: c.get_run(i).data.metrics.get("test_map50_95") for n, i in runs.items()} == {0: None, 1: 0.25, 10: None}
