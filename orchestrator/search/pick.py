"""A rule that picks one trial of the front: ``max ort_speedup where map50_95 >= 0.9 * baseline``.

Why a rule and not a trial number: the number is only known once the study has run, while the rule is the
requirement the user had before it ("the fastest model keeping 90% of the mAP"), so a script, a CI job or a
README can register "the model we ship" from any study without looking at its table first.

Grammar (words separated by spaces, metric names as trials report them)::

    RULE      := ("max" | "min") METRIC ["where" CONDITION ("and" CONDITION)*]
    CONDITION := METRIC (">=" | "<=" | ">" | "<" | "==") VALUE
    VALUE     := NUMBER | NUMBER "*" "baseline" | "baseline"

``baseline`` is the unpruned model's figure of the condition's metric. Ties go to the lower trial number.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import OrchestratorError

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_GOAL = re.compile(rf"^\s*(?P<goal>max|min)\s+(?P<metric>{_NAME})\s*(?:\bwhere\b(?P<rest>.*))?$", re.IGNORECASE)
_CONDITION = re.compile(
    rf"^\s*(?P<metric>{_NAME})\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?:(?P<factor>{_NUMBER})\s*(?P<times>\*\s*baseline)?|(?P<base>baseline))\s*$",
    re.IGNORECASE,
)
EXAMPLE = "max ort_speedup where map50_95 >= 0.9 * baseline"


@dataclass(frozen=True)
class Condition:
    """``metric op factor`` (or ``factor * baseline[metric]`` when ``relative``)."""

    metric: str
    op: str
    factor: float
    relative: bool

    def bound(self, baseline: Mapping[str, float]) -> float:
        return self.factor * baseline[self.metric] if self.relative else self.factor

    def __str__(self) -> str:
        value = f"{self.factor:g} * baseline" if self.relative else f"{self.factor:g}"
        return f"{self.metric} {self.op} {value}"


@dataclass(frozen=True)
class PickRule:
    """Best ``metric`` (``goal`` max or min) among the trials meeting every condition."""

    goal: str
    metric: str
    conditions: tuple[Condition, ...] = ()

    def __str__(self) -> str:
        where = " and ".join(map(str, self.conditions))
        return f"{self.goal} {self.metric}" + (f" where {where}" if where else "")


def parse_rule(text: str) -> PickRule:
    """The rule ``text`` spells; one :class:`OrchestratorError` naming the part that does not parse."""
    m = _GOAL.match(text)
    if m is None:
        raise OrchestratorError(f"--pick {text!r}: expected 'max METRIC' or 'min METRIC' first, as in {EXAMPLE!r}")
    conditions = []
    if m["rest"] is not None:
        parts = re.split(r"\band\b", m["rest"], flags=re.IGNORECASE)
        for part in parts:
            c = _CONDITION.match(part)
            if c is None:
                raise OrchestratorError(
                    f"--pick {text!r}: cannot read the condition {part.strip()!r}: expected METRIC OP VALUE "
                    f"(OP one of {', '.join(_OPS)}; VALUE a number, 'baseline' or 'NUMBER * baseline')"
                )
            factor = 1.0 if c["base"] else float(c["factor"])
            conditions.append(Condition(c["metric"], c["op"], factor, bool(c["base"] or c["times"])))
    return PickRule(m["goal"].lower(), m["metric"], tuple(conditions))


def pick(rule: PickRule, candidates: Sequence[tuple[int, Mapping[str, float]]], baseline: Mapping[str, float]) -> int:
    """The number of the candidate (trial number, metrics) the rule chooses; one error line when none can be.

    A metric no candidate reports, or a ``baseline`` the unpruned model has no figure for, is an error naming it
    and what is known, never a silent empty choice.
    """
    known = sorted({k for _, m in candidates for k in m})
    for name in [rule.metric, *(c.metric for c in rule.conditions)]:
        if name not in known:
            raise OrchestratorError(f"--pick: no trial reports {name!r} (known: {', '.join(known) or 'none'})")
    for c in rule.conditions:
        if c.relative and not _finite(baseline.get(c.metric)):
            raise OrchestratorError(f"--pick: the unpruned model has no {c.metric!r} figure for '{c}'")
    meeting = [
        (n, m)
        for n, m in candidates
        if _finite(m.get(rule.metric))
        and all(_finite(m.get(c.metric)) and _OPS[c.op](m[c.metric], c.bound(baseline)) for c in rule.conditions)
    ]
    if not meeting:
        raise OrchestratorError(f"--pick '{rule}': none of the {len(candidates)} front trials meets the conditions")
    sign = -1.0 if rule.goal == "max" else 1.0
    return min(meeting, key=lambda nm: (sign * nm[1][rule.metric], nm[0]))[0]


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
