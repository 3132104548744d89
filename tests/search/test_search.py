"""Search space, study creation, baselines, constraints, Pareto front and hypervolume on real Optuna storages."""

from __future__ import annotations

import optuna
import pytest
from study_files import fake_study

from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.search import (
    build_space,
    create_or_load,
    enqueue_baselines,
    hypervolume,
    hypervolume_history,
    open_storage,
    pareto_front,
)
from orchestrator.study.dimensions import RATIO_PREFIX
from orchestrator.study.file import load_study_spec

GROUPS = ["model.0", "model.1", "model.2", "model.3"]
BASE = {"map50_95": 0.3, "gflops": 1.0}


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _spec(tmp_path, **kw):
    return load_study_spec(fake_study(tmp_path, **kw))


def test_space_applies_global_and_per_group_bounds(tmp_path):
    spec = _spec(
        tmp_path,
        pruning={"ratio": {"min": 0.1, "max": 0.5}, "step": 0.05, "groups": {"model.2": {"max": 0.2}, "model.3": 0.0}},
    )
    space = build_space(spec, GROUPS)
    assert space.ratios == {"model.0": (0.1, 0.5), "model.1": (0.1, 0.5), "model.2": (0.0, 0.2), "model.3": (0.0, 0.0)}
    d = space.distributions()
    assert d[RATIO_PREFIX + "model.0"].step == 0.05 and d[RATIO_PREFIX + "model.0"].high == pytest.approx(0.5)
    assert (d["epochs"].low, d["epochs"].high) == (0, 2)
    assert d["lr0"].log and d["lr0"].low == 0.001


def test_group_pattern_matching_nothing_is_a_config_error(tmp_path):
    spec = _spec(tmp_path, pruning={"groups": {"model.9*": 0.1}})
    with pytest.raises(ConfigError, match=r"pruning.groups.model.9\*: matches no group; the groups are: model.0"):
        build_space(spec, GROUPS)


def test_baselines_are_enqueued_once_and_asked_first(tmp_path):
    spec = _spec(tmp_path, baselines={"ratios": [0.1, 0.3]})
    storage = open_storage(spec.storage)
    study = create_or_load(spec, storage)
    space = build_space(spec, GROUPS)
    assert enqueue_baselines(spec, study, space) == 2
    study = create_or_load(spec, storage)  # a resumed driver: nothing enqueued twice
    assert enqueue_baselines(spec, study, space) == 0
    t0, t1, t2 = (study.ask(space.distributions()) for _ in range(3))
    assert {t0.params[RATIO_PREFIX + g] for g in GROUPS} == {0.1}
    assert {t1.params[RATIO_PREFIX + g] for g in GROUPS} == {0.3}
    assert t0.params["epochs"] == 2 and t0.params["lr0"] == pytest.approx((0.001 * 0.01) ** 0.5)
    assert t0.user_attrs["uniform_ratio"] == 0.1
    assert "uniform_ratio" not in t2.user_attrs  # the sampler's own trial


def test_a_study_with_other_objectives_is_refused(tmp_path):
    spec = _spec(tmp_path)
    storage = open_storage(spec.storage)
    create_or_load(spec, storage)
    other = _spec(tmp_path, objectives=[{"metric": "map50_95"}, {"metric": "params"}])
    with pytest.raises(
        OrchestratorError, match=r"optimizes \['map50_95', 'gflops'\].*asks for \['map50_95', 'params'\]"
    ):
        create_or_load(other, storage)


def test_journal_storage_url(tmp_path):
    spec = _spec(tmp_path, storage=f"journal://{tmp_path}/j/study.log")
    study = create_or_load(spec, open_storage(spec.storage))
    study.tell(study.ask(), [0.1, 0.5])
    again = create_or_load(spec, open_storage(spec.storage))
    assert len(again.get_trials()) == 1 and (tmp_path / "j" / "study.log").is_file()


def _study_with(points, constraints=None):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, (m, g) in enumerate(points):
        t = study.ask()
        if constraints is not None:
            t.set_constraint("map50_95 >= 0.2", constraints[i])
        study.tell(t, [m, g])
    return study


def test_pareto_front_and_constraints():
    pts = [(0.30, 1.0), (0.20, 0.5), (0.25, 0.8), (0.10, 0.9), (0.28, 0.4)]
    study = _study_with(pts, constraints=[0, 0, 0, 0, 0.1])
    trials = study.get_trials()
    # trial 4 would dominate 1 and 2, but it violates its constraint: it is not on the front
    assert [t.number for t in pareto_front(trials, ["maximize", "minimize"])] == [0, 1, 2]
    assert [t.number for t in pareto_front(_study_with(pts).get_trials(), ["maximize", "minimize"])] == [0, 4]


def test_hypervolume_in_fractions_of_the_baseline(tmp_path):
    spec = _spec(tmp_path)  # maximize map50_95, minimize gflops
    # one point keeping 0.5 of the mAP at 0.5 of the cost: the box from (0 quality, 1 cost) is 0.5 x 0.5
    one = _study_with([(0.15, 0.5)]).get_trials()
    assert hypervolume(one, spec, BASE) == pytest.approx(0.25)
    two = _study_with([(0.15, 0.5), (0.3, 0.9)]).get_trials()
    assert hypervolume(two, spec, BASE) == pytest.approx(0.25 + 0.5 * 0.1)
    # a point costing more than the unpruned model adds nothing
    assert hypervolume(_study_with([(0.3, 1.5)]).get_trials(), spec, BASE) == 0.0
    hist = hypervolume_history(two, spec, BASE)
    assert [n for n, _ in hist] == [0, 1] and hist[0][1] <= hist[1][1]


def test_versus_uniform(tmp_path):
    from orchestrator.search import versus_uniform

    spec = _spec(tmp_path)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values, uniform in [((0.2, 0.8), 0.1), ((0.1, 0.6), 0.3), ((0.25, 0.5), None), ((0.15, 0.9), None)]:
        t = study.ask()
        if uniform is not None:
            t.set_user_attr("uniform_ratio", uniform)
        study.tell(t, list(values))
    vs = versus_uniform(study.get_trials(), spec, BASE)
    assert vs["dominate_every_uniform"] == [2]  # trial 3 dominates neither
    assert vs["uniform_dominated_by"] == {0: [2], 1: [2]}
    # uniform front: (0.2/0.3 kept, 0.8 cost) and (0.1/0.3, 0.6); searched: (0.25/0.3, 0.5) and a dominated point
    assert vs["hypervolume_uniform"] == pytest.approx(2 / 3 * 0.2 + 1 / 3 * 0.2)
    assert vs["hypervolume_searched"] == pytest.approx(0.25 / 0.3 * 0.5)
    assert vs["ratio"] == pytest.approx(vs["hypervolume_searched"] / vs["hypervolume_uniform"])
