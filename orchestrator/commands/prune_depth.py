"""``orchestrator prune --depth``: drop bottlenecks from C3 blocks, refit what follows on train images, save."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PruningError


def _check_depth_args(args: argparse.Namespace):
    """The --depth value and the flags it goes with, refused before any model is loaded (one line, exit 2)."""
    from ..prune.depth import parse_depth
    from ..prune.recovery import parse_steps

    depth = parse_depth(args.depth)
    if args.method != "unstructured" or args.exclude or args.importance or args.round_to or args.scan_from:
        raise PruningError("--depth drops whole bottlenecks: it takes no --method, --exclude, --importance, "
                           "--round-to or --scan-from")  # fmt: skip
    if isinstance(depth, int) and depth > 0 and not args.data:
        raise PruningError(f"--depth {depth} drops the least missed bottlenecks: give --data (its train images rank "
                           "them), or name how many each C3 keeps (model.6=2)")  # fmt: skip
    if args.calib_images < 2:
        raise PruningError(f"--calib-images must be at least 2, got {args.calib_images}")
    return depth, parse_steps(args.recover) if args.data else ()


def run_depth(args: argparse.Namespace, out: Path) -> int:
    """The depth cut of ``prune``: rank on --data's train images (when given), drop, recover, save, report."""
    from ..assets import resolve_weights
    from ..prune.depth import c3_blocks, shallower
    from ..yolo.checkpoint import load_checkpoint
    from ..yolo.flops import count_gflops
    from .prune_output import save_pruned

    depth, steps = _check_depth_args(args)
    weights = resolve_weights(args.weights)
    ck = load_checkpoint(weights)
    if ck.masks:
        raise PruningError(f"--weights: {weights} carries unstructured masks; depth pruning takes a dense model")
    calib = None
    if args.data:
        from ..assets import resolve_data
        from ..prune.calibration import calibration_set
        from ..yolo.data import load_data_config

        calib = calibration_set(load_data_config(resolve_data(args.data)), args.imgsz, args.calib_images)
    done = shallower(ck.model, depth, calib, steps)
    if not done.cut.dropped:
        raise PruningError(f"--depth {args.depth}: drops no bottleneck (each C3 already keeps that many)")
    before, after = (count_gflops(m, args.imgsz) for m in (ck.model, done.model))
    meta = {
        "depth": {
            "dropped": done.cut.dropped,
            "blocks": {k: list(v) for k, v in done.cut.blocks.items()},
            "gflops_fraction": after / before,
        },
        "recovery": {"steps": [s for s in steps if s != "compensate"], "refit": done.refit, "seconds": done.seconds},
        "source": str(weights),
    }
    if save_pruned(args, done.model, out, meta):
        return 0
    from rich.table import Table

    from .console import stdout_console

    t = Table(title=f"depth-pruned -> {out}", show_header=False, title_justify="left")
    blocks = {b.name: b for b in c3_blocks(done.model)}
    for name, (b0, b1) in done.cut.blocks.items():
        t.add_row(name, f"{b0} -> {b1} bottlenecks (of {blocks[name].original})")
    t.add_row("GFLOPs", f"{before:.3f} -> {after:.3f} ({after / before:.3f}x) at {args.imgsz}")
    if calib is None:
        t.add_row("recovery", "none (give --data to refit the layers after on train images)")
    else:
        what = ", ".join(f"{k} {v:.1f} s" for k, v in done.seconds.items())
        t.add_row("recovery", f"{done.refit} convs refit on {len(calib)} train images ({what})")
    stdout_console().print(t)
    return 0
