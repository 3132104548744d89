"""``orchestrator prune --target-speedup S``: the cut ONNX Runtime runs S x as fast, with the least predicted loss."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PruningError


def _check_speedup_args(args: argparse.Namespace) -> None:
    """The flags --target-speedup goes with, refused before any model is loaded (one line naming the flag, exit 2)."""
    from ..deploy.speedup_cut import check_target

    check_target(args.target_speedup)
    args.method = args.method or "structured"
    if args.method != "structured":
        raise PruningError("--target-speedup cuts channels and bottlenecks: it goes with --method structured")
    if not args.data:
        raise PruningError("--target-speedup needs --data (its val images score the cuts, its train images fit them)")
    if args.scan_from:
        raise PruningError("--scan-from goes with --target-gflops (--target-speedup caches its latency table itself)")
    if args.exclude:
        raise PruningError("--exclude goes with --ratio")
    bounds = (
        ("--threads", args.threads, 1),
        ("--max-depth", args.max_depth, 0),
        ("--timing-runs", args.timing_runs, 3),
        ("--calib-images", args.calib_images, 2),
    )
    for flag, value, low in bounds:
        if value is not None and value < low:
            raise PruningError(f"{flag} must be at least {low}, got {value}")
    if args.imgsz <= 0 or args.imgsz % 32:
        raise PruningError(f"--imgsz must be a positive multiple of 32 (the largest stride), got {args.imgsz}")


def run_speedup(args: argparse.Namespace, out: Path) -> int:
    """Latency table (cached), sensitivity scan, greedy allocation checked by timing, then the recovered cut."""
    import torch

    from ..assets import cache_dir, resolve_data, resolve_weights
    from ..deploy.latency import TIMING_RUNS
    from ..deploy.speedup_cut import cut_to_speedup
    from ..prune.calibration import calibration_set
    from ..prune.oneshot import OneShot
    from ..prune.recovery import parse_steps
    from ..yolo.checkpoint import load_checkpoint
    from ..yolo.data import load_data_config
    from .prune_output import Stages, parse_scan_ratios, save_pruned

    _check_speedup_args(args)
    steps = parse_steps(args.recover)
    ratios = parse_scan_ratios(args.scan_ratios)
    weights = resolve_weights(args.weights)
    ck = load_checkpoint(weights)
    if ck.masks:
        raise PruningError(f"--weights: {weights} carries unstructured masks; --target-speedup takes a dense model")
    data = load_data_config(resolve_data(args.data))
    importance = args.importance or "output_error"
    threads = args.threads or torch.get_num_threads()
    shot = OneShot(ck.model, calibration_set(data, args.imgsz, args.calib_images))
    with Stages() as stages:
        budget = cut_to_speedup(
            shot, data, weights, args.target_speedup, ratios, args.granularity, importance, steps, args.imgsz,
            threads, round_to=args.round_to, max_depth=args.max_depth, runs=args.timing_runs or TIMING_RUNS,
            on_table=stages.table_point, on_point=stages.scan_point, cache=cache_dir(),
        )  # fmt: skip
        stages.recovery(len(shot.calib), steps)
        done = shot.cut(budget["ratios"], granularity=args.granularity, importance=importance,
                        round_to=args.round_to, steps=steps, depth=budget["depth"])  # fmt: skip
    meta = {
        "pruning": done.prune.to_dict(),
        "recovery": {"steps": list(done.recovery.steps), "seconds": done.recovery.seconds},
        "source": str(weights),
        "speedup_budget": budget,
    }
    if budget["depth"]:
        meta["depth"] = {"dropped": budget["depth"], "blocks": {k: list(v) for k, v in done.depth.blocks.items()}}
    if save_pruned(args, done.model, out, meta):
        return 0
    _print(budget, out, done)
    return 0


def _print(budget: dict, out: Path, done) -> None:
    from rich.table import Table

    from .console import stdout_console

    t = Table(title=f"pruned for speed -> {out}", show_header=False, title_justify="left")
    b = budget
    t.add_row(
        "speed-up",
        f"{b['speedup']:.2f}x measured (target {b['target']:g}; ONNX Runtime, {b['threads']} threads, "
        f"{b['imgsz']} px, unpruned {b['unpruned_ms']:.2f} ms)",
    )
    t.add_row("predicted loss", f"{b['predicted_loss']:.4f} mAP50-95 (unpruned {b['unpruned_map50_95']:.4f} on val)")
    t.add_row("channel cuts", ", ".join(f"{k} {v:g}" for k, v in b["ratios"].items()) or "none")
    t.add_row("bottlenecks dropped", ", ".join(b["dropped"]) or "none")
    p = done.prune
    t.add_row("params", f"{p.params_before:,} -> {p.params_after:,} ({p.params_ratio:.3f}x)")
    tab = b["table"]
    cached = "read from the cache" if not tab["timed_now"] else f"{tab['timed_now']} cuts timed now"
    t.add_row("latency table", f"{cached} ({tab['seconds']:.0f} s)")
    seconds = f"{b['scan_seconds']:.0f} s / {b['allocation_seconds']:.0f} s"
    t.add_row("scan / allocation", f"{seconds} ({b['timings']} timings)")
    t.add_row("recovery", ", ".join(f"{k} {v:.1f} s" for k, v in done.recovery.seconds.items()) or "none")
    stdout_console().print(t)
