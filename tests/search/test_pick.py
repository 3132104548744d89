"""The --pick rule: what it parses, which front trial it chooses, and one error line for what it cannot use."""

from __future__ import annotations

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.search.pick import Condition, PickRule, parse_rule, pick

BASELINE = {"map50_95": 0.30, "ort_speedup": 1.0, "size_mb": 4.0}
FRONT = [
    (3, {"map50_95": 0.29, "ort_speedup": 1.1, "size_mb": 3.5}),
    (7, {"map50_95": 0.27, "ort_speedup": 1.6, "size_mb": 2.0}),  # 0.9 * 0.30 = 0.27: on the bound
    (9, {"map50_95": 0.20, "ort_speedup": 2.4, "size_mb": 1.0}),
    (12, {"map50_95": 0.27, "ort_speedup": 1.6, "size_mb": 2.1}),  # ties 7 on speed-up: the lower number wins
]


def test_the_readme_rule_parses():
    assert parse_rule("max ort_speedup where map50_95 >= 0.9 * baseline") == PickRule(
        "max", "ort_speedup", (Condition("map50_95", ">=", 0.9, True),)
    )
    rule = parse_rule("MIN size_mb where map50_95 > 0.25 and ort_speedup >= baseline")
    assert rule == PickRule(
        "min", "size_mb", (Condition("map50_95", ">", 0.25, False), Condition("ort_speedup", ">=", 1.0, True))
    )
    assert str(rule) == "min size_mb where map50_95 > 0.25 and ort_speedup >= 1 * baseline"


@pytest.mark.parametrize(
    "rule, chosen",
    [
        ("max ort_speedup where map50_95 >= 0.9 * baseline", 7),
        ("max ort_speedup", 9),
        ("min size_mb where map50_95 > 0.28", 3),
        ("max map50_95 where size_mb <= 2", 7),
        ("max ort_speedup where map50_95 >= 0.25 and size_mb < 2.05", 7),
    ],
)
def test_the_rule_chooses(rule, chosen):
    assert pick(parse_rule(rule), FRONT, BASELINE) == chosen


@pytest.mark.parametrize(
    "rule, words",
    [
        ("fastest", "expected 'max METRIC' or 'min METRIC' first"),
        ("max ort_speedup where map50_95", "cannot read the condition 'map50_95'"),
        ("max ort_speedup where map50_95 => 0.9", "cannot read the condition"),
        ("max ort_speedup where map50_95 >= 0.9 * unpruned", "cannot read the condition"),
    ],
)
def test_a_rule_that_does_not_parse_says_where(rule, words):
    with pytest.raises(OrchestratorError, match=words):
        parse_rule(rule)


def test_a_rule_nothing_meets_or_a_metric_nobody_reports_is_an_error():
    with pytest.raises(OrchestratorError, match="none of the 4 front trials meets"):
        pick(parse_rule("max ort_speedup where map50_95 >= baseline"), FRONT, BASELINE)
    with pytest.raises(OrchestratorError, match=r"no trial reports 'latency' \(known: map50_95, ort_speedup"):
        pick(parse_rule("min latency"), FRONT, BASELINE)
    with pytest.raises(OrchestratorError, match="the unpruned model has no 'size_mb' figure"):
        pick(parse_rule("max ort_speedup where size_mb <= 0.5 * baseline"), FRONT, {"map50_95": 0.3})
