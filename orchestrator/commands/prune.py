"""``orchestrator prune``: prune a checkpoint by one ratio or a per-layer ratio file, and save it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import PruningError
from .arg_checks import check_out


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prune",
        help="prune a checkpoint by one ratio or a per-layer ratio file",
        description="Prune a YOLOv5 checkpoint and save it. unstructured: L1 masks per layer (zeros, same speed); "
        "global: one L1 threshold across the chosen layers; structured: output channels removed (a smaller, "
        "faster dense model; Detect's output convs are kept). Names come from `orchestrator layers`.",
    )
    p.add_argument("--weights", required=True, help="checkpoint file (official YOLOv5 .pt or one of ours)")
    p.add_argument("--method", choices=("unstructured", "global", "structured"), default="unstructured")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=float, help="one ratio in [0, 1) for every group")
    how.add_argument("--ratios", metavar="FILE.yaml", help="yaml mapping of group names to ratios in [0, 1)")
    p.add_argument("--granularity", choices=("layer", "block", "stage"), default="layer", help="default layer")
    p.add_argument("--exclude", nargs="+", default=(), metavar="NAME", help="with --ratio: groups to leave alone")
    p.add_argument("--importance", choices=("l1", "l2", "bn_scale"), default="l1", help="default l1")
    p.add_argument("--round-to", type=int, default=None, metavar="N", help="structured: keep multiples of N channels")
    p.add_argument("--out", required=True, help="where to write the pruned checkpoint")
    p.add_argument("--official", action="store_true", help="write the official YOLOv5 layout (fp16 pickled module)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def read_ratio_file(path: str | Path) -> dict[str, float]:
    """A yaml mapping of group names to ratios (values are checked against the model later)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PruningError(f"{path}: no such ratio file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PruningError(f"{path}: not valid yaml ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise PruningError(f"{path}: expected a mapping of group names to ratios, e.g. 'model.6: 0.3'")
    return {str(k): v for k, v in data.items()}


def run(args: argparse.Namespace) -> int:
    out = check_out(args.out)  # before the work: an unwritable --out must not cost a pruning
    from ..assets import resolve_weights
    from ..prune import apply_ratios, prunable_groups
    from ..prune.layers import check_ratio
    from ..yolo.checkpoint import load_checkpoint, save_checkpoint
    from ..yolo.masks import attach_masks, carried_masks

    weights = resolve_weights(args.weights)
    ck = load_checkpoint(weights)
    model = ck.model
    groups_for = "structured" if args.method == "structured" else "unstructured"
    if args.ratios:
        if args.exclude:
            raise PruningError("--exclude goes with --ratio; leave groups out of the --ratios file instead")
        ratios = read_ratio_file(args.ratios)
    else:
        r = check_ratio("--ratio", args.ratio)
        ratios = {k: r for k in prunable_groups(model, args.granularity, args.exclude, method=groups_for)}
    try:
        report = apply_ratios(
            model,
            ratios,
            method=args.method,
            granularity=args.granularity,
            importance=args.importance,
            round_to=args.round_to,
        )
    except PruningError as e:
        raise PruningError(f"{args.ratios}: {e}" if args.ratios else str(e)) from None
    attach_masks(model, carried_masks(model, ck.masks))  # the file's earlier cuts stay recorded in the output
    meta = {"pruning": report.to_dict(), "source": str(weights)}
    if args.official:
        from ..yolo.official_layout import save_official

        save_official(model, out)
    else:
        save_checkpoint(model, out, meta=meta)
    if args.json:
        print(json.dumps({"out": str(out), "layout": "official" if args.official else "orchestrator", **meta}))
        return 0
    _print(report, out)
    return 0


def _print(report, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"pruned -> {out}", show_header=False, title_justify="left")
    t.add_row("method", f"{report.method} ({report.importance}, granularity {report.granularity})")
    t.add_row("groups pruned", str(sum(1 for r in report.ratios.values() if r > 0)))
    t.add_row("params", f"{report.params_before:,} -> {report.params_after:,} ({report.params_ratio:.3f}x)")
    t.add_row("conv weight zeros", f"{report.sparsity:.4f}")
    if report.round_to:
        t.add_row("round to", str(report.round_to))
    Console().print(t)
