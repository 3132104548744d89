"""``orchestrator check STUDY``: validate a study file without running anything (no Ray, no run, no file)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check",
        help="validate a study file without running anything",
        description="Load and validate the study file, check that the weights and data resolve, and print the "
        "search it describes. Starts no Ray, claims no GPU, creates no study, run or file.",
    )
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..search import baseline_values
    from ..study.checks import check_inputs
    from ..study.dimensions import DIMENSIONS
    from ..study.file import load_study_spec
    from ..urls import mask_url

    spec = load_study_spec(args.study)
    found = check_inputs(spec)
    pr = spec.pruning
    summary = {
        "study": spec.name,
        "model": mask_url(found.get("model", spec.model)),
        "data": mask_url(found.get("data", spec.data)),
        "trial": spec.trial,
        "method": pr.method,
        "granularity": pr.granularity,
        "importance": pr.importance,
        **({"recover": list(pr.recover), "calib_images": pr.calib_images} if pr.recover else {}),
        **({"distill": spec.finetune.distill} if spec.finetune.distill else {}),
        "groups": found.get("groups"),
        "ratio": [pr.ratio.low, pr.ratio.high],
        **{name: dim.describe(spec.space[name]) for name, dim in DIMENSIONS.items()},
        "objectives": [f"{o.direction} {o.metric}" for o in spec.objectives],
        "constraints": [c.text for c in spec.constraints],
        "sampler": f"{spec.sampler.name} (seed {spec.sampler.seed})"
        + (f", warm start {spec.sampler.warm_start}" if spec.sampler.warm_start != "none" else ""),
        "baselines": {"ratios": list(spec.baselines.ratios), **baseline_values(spec)},
        "n_trials": spec.budget.n_trials,
        "timeout_s": spec.budget.timeout_s,
        "storage": found["storage"],
        "tracking": found["tracking"],
        "ray": mask_url(spec.resources.address) or "local",
        "warnings": found.get("warnings", []),
    }
    for warning in summary["warnings"]:  # images the trials will skip: said, never silent
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
        return 0
    from rich.table import Table

    from .console import stdout_console

    t = Table(title=f"{args.study}: OK", show_header=False, title_justify="left")
    for k, v in summary.items():
        if v is not None and k != "warnings":
            t.add_row(k, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
    stdout_console().print(t)
    return 0
