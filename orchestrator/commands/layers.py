"""``orchestrator layers``: the group names a ratio file may use, at a granularity."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "layers",
        help="list the prunable groups a ratio file may name",
        description="List the prunable groups of a checkpoint: layer (each conv; for structured pruning each set of "
        "convs whose output channels are tied), block (each yaml row, e.g. model.6) or stage (backbone.P1-P5, neck, "
        "head). For structured pruning Detect's output convs are not listed: they are never pruned.",
    )
    p.add_argument("--weights", required=True, help="checkpoint file (official YOLOv5 .pt or one of ours)")
    p.add_argument("--granularity", choices=("layer", "block", "stage"), default="layer", help="default layer")
    p.add_argument(
        "--method", choices=("unstructured", "structured"), default="unstructured", help="default unstructured"
    )
    p.add_argument("--json", action="store_true", help="print {group: [conv names]} as one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    from ..assets import resolve_weights
    from ..prune import prunable_groups
    from ..yolo.checkpoint import load_model

    weights = resolve_weights(args.weights)
    model = load_model(weights)
    groups = prunable_groups(model, args.granularity, method=args.method)
    if args.json:
        print(json.dumps(groups))
        return 0
    from rich.table import Table

    from .console import stdout_console

    t = Table(title=f"{weights.name}: {len(groups)} {args.granularity} groups ({args.method})", title_justify="left")
    t.add_column("name")
    t.add_column("convs", justify="right")
    t.add_column("out channels", justify="right")
    t.add_column("weights", justify="right")
    t.add_column("members")
    for name, convs in groups.items():
        mods = [model.get_submodule(c) for c in convs]
        tied = args.method == "structured" and args.granularity == "layer"  # one channel set shared by all
        channels = mods[0].out_channels if tied else sum(m.out_channels for m in mods)
        members = ", ".join(convs) if len(convs) <= 3 else f"{', '.join(convs[:2])}, ... ({len(convs)})"
        t.add_row(
            name,
            str(len(convs)),
            str(channels),
            f"{sum(m.weight.numel() for m in mods):,}",
            members if convs != [name] else "",
        )
    stdout_console().print(t)
    return 0
