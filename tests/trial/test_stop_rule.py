"""The early-stopping rule both trials share (contract.stop_reason), on hand-made learning curves."""

from __future__ import annotations

from orchestrator.trial.contract import EarlyStop, Reference, TrialSpec, stop_reason

COSTS = (("nonzero_params", "minimize"),)


def _spec(refs: list[Reference], epochs: int = 4, margin: float = 0.02, after: int = 1) -> TrialSpec:
    rule = EarlyStop(margin, after, COSTS, tuple(refs))
    return TrialSpec(7, None, {}, {"epochs": epochs}, stop=rule)  # type: ignore[arg-type]


def test_a_trial_behind_a_cheaper_one_at_the_same_epoch_stops_with_the_gap():
    spec = _spec([Reference(3, (1000.0,), (0.20, 0.25, 0.27, 0.28))])
    why, gap = stop_reason(spec, 2, 0.20, {"nonzero_params": 1200.0})
    assert why == "stopped after epoch 2 of 4: mAP50-95 0.200, trial 3 at no more cost had 0.250 by then (margin 0.02)"
    assert abs(gap - (0.25 - 0.02 - 0.20)) < 1e-12


def test_within_the_margin_or_against_a_costlier_trial_it_goes_on():
    refs = [Reference(3, (1000.0,), (0.20, 0.25, 0.27, 0.28)), Reference(4, (2000.0,), (0.5, 0.6, 0.6, 0.6))]
    assert stop_reason(_spec(refs), 2, 0.235, {"nonzero_params": 1200.0}) == ("", 0.0)  # 0.25 - 0.02 < 0.235
    assert stop_reason(_spec(refs), 2, 0.10, {"nonzero_params": 900.0}) == ("", 0.0)  # both cost more
    equal = stop_reason(_spec(refs), 2, 0.10, {"nonzero_params": 1000.0})[0]  # equal cost counts as no more
    assert "trial 3" in equal


def test_never_before_after_nor_after_the_last_epoch_nor_against_a_shorter_curve():
    refs = [Reference(3, (1000.0,), (0.30, 0.30))]
    mine = {"nonzero_params": 1200.0}
    assert stop_reason(_spec(refs, after=2), 1, 0.0, mine)[0] == ""
    assert stop_reason(_spec(refs, epochs=2), 2, 0.0, mine)[0] == ""  # its last epoch: nothing left to save
    assert stop_reason(_spec(refs), 3, 0.0, mine)[0] == ""  # the reference never ran a third epoch
    assert stop_reason(_spec(refs), 2, 0.0, mine)[0].startswith("stopped after epoch 2 of 4")


def test_the_worst_gap_names_the_reference():
    refs = [Reference(1, (1000.0,), (0.22,)), Reference(2, (900.0,), (0.30,))]
    why, gap = stop_reason(_spec(refs), 1, 0.10, {"nonzero_params": 1000.0})
    assert "trial 2" in why and abs(gap - 0.18) < 1e-12


def test_maximized_costs_compare_the_other_way():
    rule = EarlyStop(0.0, 1, (("speedup", "maximize"),), (Reference(1, (2.0,), (0.3,)),))
    spec = TrialSpec(7, None, {}, {"epochs": 3}, stop=rule)  # type: ignore[arg-type]
    assert stop_reason(spec, 1, 0.1, {"speedup": 1.5})[0]  # the reference is faster and better
    assert not stop_reason(spec, 1, 0.1, {"speedup": 2.5})[0]
