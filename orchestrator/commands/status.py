"""``orchestrator status STUDY``: the study's trials from its Optuna storage, Pareto front marked."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..study.dimensions import parameter_names


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status",
        help="trials of a study (state, objectives, failure reasons), Pareto front marked",
        description="Read the study's Optuna storage (nothing is started or written) and list its trials.",
    )
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def run(args: argparse.Namespace) -> int:
    from ..search import load_existing
    from ..study.file import load_study_spec

    spec = load_study_spec(args.study)
    snap = _snapshot(spec, load_existing(spec))
    if args.json:
        print(json.dumps(snap, default=str))
        return 0
    from .console import stdout_console

    stdout_console().print(_table(spec, snap))
    if snap["versus_uniform"]["hypervolume_uniform"] > 0:
        stdout_console().print(_versus_uniform_line(snap["versus_uniform"], snap["trials"]))
    if snap["driver"]:
        stdout_console().print(f"driver running: pid {snap['driver'].get('pid')} on {snap['driver'].get('host')}")
    return 0


def _snapshot(spec, study) -> dict[str, Any]:
    """Everything ``status`` shows, as the one JSON object ``--json`` prints (the table reads the same)."""
    from ..search import (
        STUDY_BASELINE,
        STUDY_LEASE,
        hypervolume,
        pareto_front,
        revealed,
        trial_summary,
        versus_uniform,
    )
    from ..urls import mask_url

    trials = study.get_trials(deepcopy=False)
    front = {t.number for t in pareto_front(trials, spec.directions)}
    baseline = (study.user_attrs.get(STUDY_BASELINE) or {}).get("metrics", {})
    test = revealed(trials, spec.directions)  # held-out figures: the front and the uniform baselines only
    records = [
        dict(trial_summary(t, study.user_attrs), pareto=t.number in front, test=test.get(t.number)) for t in trials
    ]
    for r in records:  # a reason may quote a storage or tracking URL: never show its password
        r["failure"] = mask_url(r["failure"])
    return {
        "study": spec.name,
        "target": spec.budget.n_trials,
        "counts": _counts(records),
        "hypervolume": hypervolume(trials, spec, baseline) if baseline else 0.0,
        "versus_uniform": versus_uniform(trials, spec, baseline),
        "baseline": baseline,
        "driver": study.user_attrs.get(STUDY_LEASE),
        "trials": records,
    }


def _counts(records: list[dict]) -> dict[str, int]:
    """Trials per state; SCREENED and STOPPED (told COMPLETE to Optuna, never fine-tuned or stopped during it) only
    in a study that has some."""
    states = ("COMPLETE", "FAIL", "RUNNING", "WAITING")
    counts = {s: sum(r["state"] == s for r in records) for s in states}
    for state in ("SCREENED", "STOPPED"):
        if n := sum(r["state"] == state for r in records):
            counts[state] = n
    return counts


def _table(spec, snap: dict[str, Any]):
    from rich.table import Table

    from ..study.metrics import TEST_METRICS

    counts, baseline, records = snap["counts"], snap["baseline"], snap["trials"]
    metrics = [o.metric for o in spec.objectives]
    t = Table(
        title=f"{spec.name}: {counts['COMPLETE']}/{spec.budget.n_trials or '-'} complete, {counts['FAIL']} failed, "
        + (f"{counts['SCREENED']} screened, " if counts.get("SCREENED") else "")
        + (f"{counts['STOPPED']} stopped early, " if counts.get("STOPPED") else "")
        + f"{counts['RUNNING']} running, {counts['WAITING']} waiting · hypervolume {snap['hypervolume']:.4f}",
        title_justify="left",
    )
    tests = list(TEST_METRICS) if any(r["test"] for r in records) else []
    dims = parameter_names(spec.space)
    for col in ["#", "state", "front", "origin", *metrics, *tests, *dims, "mean ratio", "failure"]:
        t.add_column(col, justify="left" if col in ("state", "failure") else "right", overflow="fold")
    if baseline:
        t.add_row(
            "base", "unpruned", "", "", *[_fmt(baseline.get(m)) for m in metrics], *["" for _ in tests + dims], "0", ""
        )
    for r in records:
        ratios = list(r["ratios"].values())
        t.add_row(
            str(r["number"]),
            r["state"],
            "*" if r["pareto"] else "",
            r["origin"],
            *[_fmt(r["metrics"].get(m)) for m in metrics],
            *[_fmt((r["test"] or {}).get(k)) if r["test"] else "" for k in tests],
            *[_fmt(r["dimensions"][d]) if r["dimensions"][d] is not None else "" for d in dims],
            _fmt(sum(ratios) / len(ratios)) if ratios else "",
            r["failure"][:200],
        )
    return t


def _versus_uniform_line(vs: dict, records: list[dict]) -> str:
    """Each uniform baseline and the searched trials that dominate it (the sampler's own ones counted apart)."""
    uniform = {r["number"]: r["uniform_ratio"] for r in records if r["uniform_ratio"] is not None}
    by = vs["uniform_dominated_by"]
    parts = []
    for n, trials in by.items():
        shown = ", ".join(map(str, trials[:4])) + (", ..." if len(trials) > 4 else "")
        parts.append(f"uniform {uniform.get(n, n):g} <- {shown or 'none'}")
    line = (
        f"searched vs uniform: hypervolume {vs['hypervolume_searched']:.4f} vs {vs['hypervolume_uniform']:.4f}"
        f" ({vs['ratio']:.2f}x); uniform baselines dominated by a searched trial: "
        f"{sum(bool(v) for v in by.values())}/{len(by)}"
    )
    if any(r["warm_start"] is not None for r in records):
        sampled = vs["uniform_dominated_by_sampled"]
        line += f" (by a sampler-proposed trial: {sum(bool(v) for v in sampled.values())}/{len(sampled)})"
    line += f"; one trial dominating all: {', '.join(map(str, vs['dominate_every_uniform'])) or 'none'}"
    return line + "\n" + " | ".join(parts)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
