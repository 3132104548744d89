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
        "head). For structured pruning Detect's output convs are not listed: they are never pruned. --depth lists the "
        "C3 blocks instead, with the bottlenecks each keeps of the unpruned table's (what `prune --depth` names).",
    )
    p.add_argument("--weights", required=True, help="checkpoint file (official YOLOv5 .pt or one of ours)")
    p.add_argument("--granularity", choices=("layer", "block", "stage"), default="layer", help="default layer")
    p.add_argument(
        "--method", choices=("unstructured", "structured"), default="unstructured", help="default unstructured"
    )
    p.add_argument("--depth", action="store_true", help="list the C3 blocks and their bottlenecks (kept/original)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print {group: [conv names]} (with --depth {block: {bottlenecks, original, residual}}) as one JSON object",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from ..assets import resolve_weights
    from ..prune import prunable_groups
    from ..yolo.checkpoint import load_model

    weights = resolve_weights(args.weights)
    model = load_model(weights)
    if args.depth:
        return _depth(model, weights.name, args.json)
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


def _depth(model, file: str, as_json: bool) -> int:
    """The C3 blocks: bottlenecks kept / in the unpruned table, residual or not."""
    from ..prune.depth import c3_blocks

    blocks = c3_blocks(model)
    if as_json:
        print(json.dumps({b.name: {"bottlenecks": b.bottlenecks, "original": b.original, "residual": b.residual}
                          for b in blocks}))  # fmt: skip
        return 0
    from rich.table import Table

    from .console import stdout_console

    kept, total = sum(b.bottlenecks for b in blocks), sum(b.original for b in blocks)
    console = stdout_console()
    console.print(f"{file}: {len(blocks)} C3 blocks, {kept}/{total} bottlenecks")  # a line: wider than the table
    t = Table()
    t.add_column("name")
    t.add_column("bottlenecks", justify="right")
    t.add_column("residual")
    for b in blocks:
        t.add_row(b.name, f"{b.bottlenecks}/{b.original}", "yes" if b.residual else "no")
    console.print(t)
    return 0
