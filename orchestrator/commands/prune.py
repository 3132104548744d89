"""``orchestrator prune``: prune a checkpoint by one ratio or a per-layer ratio file, and save it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PruningError
from ..vocabulary import GRANULARITIES, IMPORTANCES, METHODS
from .arg_checks import check_out
from .prune_output import Stages, parse_scan_ratios, previous_scan, save_pruned


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prune",
        help="prune a checkpoint by one ratio, a per-layer ratio file, a GFLOPs budget or depth",
        description="Prune a YOLOv5 checkpoint and save it. unstructured: L1 masks per layer (zeros, same speed); "
        "global: one L1 threshold across the chosen layers; structured: output channels removed (a smaller, "
        "faster dense model; Detect's output convs are kept); --depth: whole bottlenecks dropped from C3 blocks. "
        "Names come from `orchestrator layers` (`layers --depth` for the C3 blocks).",
    )
    p.add_argument("--weights", required=True, help="checkpoint file (official YOLOv5 .pt or one of ours)")
    p.add_argument(
        "--method",
        choices=(*METHODS, "global"),
        default=None,
        help="default unstructured (structured with --target-speedup)",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--ratio", type=float, help="one ratio in [0, 1) for every group")
    how.add_argument("--ratios", metavar="FILE.yaml", help="yaml mapping of group names to ratios in [0, 1)")
    how.add_argument(
        "--target-gflops",
        type=float,
        metavar="F",
        help="structured, needs --data: scan each group's sensitivity, then cut to F x the unpruned GFLOPs",
    )
    how.add_argument(
        "--target-speedup",
        type=float,
        metavar="S",
        help="structured, needs --data: cut channels and bottlenecks until ONNX Runtime runs the model S x as fast "
        "(S > 1; cuts ranked by the ms each saves on this machine, timed once and cached)",
    )
    how.add_argument(
        "--depth",
        metavar="SPEC",
        help="drop bottlenecks from C3 blocks: how many each keeps (model.4=1,model.6=2), or a number to drop "
        "(3: the least missed on --data's train images, residual ones first); with --data the layers after "
        "are refit (--recover)",
    )
    p.add_argument("--granularity", choices=GRANULARITIES, default="layer", help="default layer")
    p.add_argument("--exclude", nargs="+", default=(), metavar="NAME", help="with --ratio: groups to leave alone")
    p.add_argument(
        "--importance",
        choices=IMPORTANCES,
        default=None,
        help="default l1; structured with --data: output_error (channel output variance x consumer weights)",
    )
    p.add_argument("--data", help="structured: data yaml whose TRAIN images calibrate recovery (val scores the scan)")
    p.add_argument(
        "--recover",
        default="compensate,reconstruct",
        metavar="STEPS",
        help="structured with --data: comma list of compensate, reconstruct, recalibrate, or none "
        "(default compensate,reconstruct)",
    )
    p.add_argument(
        "--calib-images",
        type=int,
        default=128,
        metavar="N",
        help="train images that rank channels and fit the recovery (default 128, or all the split has)",
    )
    p.add_argument("--imgsz", type=int, default=320, help="calibration / scan image size (default 320)")
    p.add_argument(
        "--scan-from",
        metavar="FILE.json",
        help="with --target-gflops: reuse the scan of an earlier `prune --target-gflops --json` output",
    )
    p.add_argument(
        "--scan-ratios", default="0.25,0.5", metavar="R,R", help="with --target-gflops: ratios each group is scanned at"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="with --target-speedup: ONNX Runtime threads timed (default torch's thread count)",
    )
    p.add_argument(
        "--max-depth",
        type=int,
        default=None,
        metavar="N",
        help="with --target-speedup: drop at most N bottlenecks (0: channel cuts only; default any)",
    )
    p.add_argument(
        "--timing-runs",
        type=int,
        default=None,
        metavar="N",
        help="with --target-speedup: pairs per interleaved timing (default 40)",
    )
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
    from ..yolo.checkpoint import load_checkpoint
    from ..yolo.masks import attach_masks, carried_masks

    if args.target_speedup is not None:
        from .prune_speedup import run_speedup

        return run_speedup(args, out)
    args.method = args.method or "unstructured"
    if args.depth is not None:
        from .prune_depth import run_depth

        return run_depth(args, out)
    if args.ratio is None and args.ratios is None and args.target_gflops is None:
        raise PruningError("give one of --ratio, --ratios, --target-gflops, --target-speedup or --depth")
    _check_structured_args(args)
    weights = resolve_weights(args.weights)
    ck = load_checkpoint(weights)
    model = ck.model
    if args.method == "structured" and args.data:
        return _run_recovered(args, model, weights, out)
    args.importance = args.importance or "l1"
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
    if save_pruned(args, model, out, meta):
        return 0
    _print(report, out)
    return 0


def _check_structured_args(args: argparse.Namespace) -> None:
    """Flag combinations refused before any model is loaded (one line naming the flag, exit 2)."""
    if args.target_gflops is not None:
        if args.method != "structured":
            raise PruningError("--target-gflops goes with --method structured")
        if not 0 < args.target_gflops <= 1:
            raise PruningError(f"--target-gflops must be in (0, 1], got {args.target_gflops:g}")
        if not args.data:
            raise PruningError("--target-gflops needs --data (its val images score the sensitivity scan)")
    if args.importance == "output_error" and not (args.method == "structured" and args.data):
        raise PruningError("--importance output_error needs --method structured and --data (calibration images)")
    if args.calib_images < 2:
        raise PruningError(f"--calib-images must be at least 2, got {args.calib_images}")
    for flag in ("threads", "max_depth", "timing_runs"):
        if getattr(args, flag) is not None:
            raise PruningError(f"--{flag.replace('_', '-')} goes with --target-speedup")


def _run_recovered(args: argparse.Namespace, model, weights: Path, out: Path) -> int:
    """Structured cut (by ratios or to a GFLOPs budget) with one-shot recovery on train images."""
    from ..assets import resolve_data
    from ..prune import prunable_groups
    from ..prune.budget_cut import cut_to_budget
    from ..prune.calibration import calibration_set
    from ..prune.layers import check_ratio
    from ..prune.oneshot import OneShot
    from ..prune.recovery import parse_steps
    from ..yolo.data import load_data_config

    steps = parse_steps(args.recover)
    data = load_data_config(resolve_data(args.data))  # names resolve as in every command ($ORCHESTRATOR_ASSETS)
    importance = args.importance or "output_error"
    scan_ratios = parse_scan_ratios(args.scan_ratios) if args.target_gflops is not None else []
    previous = previous_scan(args.scan_from) if args.scan_from and args.target_gflops is not None else None
    shot = OneShot(model, calibration_set(data, args.imgsz, args.calib_images))
    budget = None
    with Stages() as stages:
        if args.target_gflops is not None:
            budget = cut_to_budget(
                shot, data, args.target_gflops, scan_ratios, args.granularity, importance, steps,
                previous=previous, round_to=args.round_to, on_point=stages.scan_point,
            )  # fmt: skip
            ratios = budget["ratios"]
        elif args.ratios:
            ratios = read_ratio_file(args.ratios)
        else:
            r = check_ratio("--ratio", args.ratio)
            ratios = {k: r for k in prunable_groups(model, args.granularity, args.exclude, method="structured")}
        stages.recovery(len(shot.calib), steps)
        try:
            done = shot.cut(
                ratios, granularity=args.granularity, importance=importance, round_to=args.round_to, steps=steps
            )
        except PruningError as e:
            raise PruningError(f"{args.ratios}: {e}" if args.ratios else str(e)) from None
    meta = {
        "pruning": done.prune.to_dict(),
        "recovery": {"steps": list(done.recovery.steps), "seconds": done.recovery.seconds},
        "source": str(weights),
    }
    if budget is not None:
        meta["budget"] = budget
    if save_pruned(args, done.model, out, meta):
        return 0
    _print(done.prune, out, done.recovery.seconds, budget)
    return 0


def _print(report, out: Path, recovery: dict[str, float] | None = None, budget: dict | None = None) -> None:
    from rich.table import Table

    from .console import stdout_console

    t = Table(title=f"pruned -> {out}", show_header=False, title_justify="left")
    t.add_row("method", f"{report.method} ({report.importance}, granularity {report.granularity})")
    t.add_row("groups pruned", str(sum(1 for r in report.ratios.values() if r > 0)))
    t.add_row("params", f"{report.params_before:,} -> {report.params_after:,} ({report.params_ratio:.3f}x)")
    t.add_row("conv weight zeros", f"{report.sparsity:.4f}")
    if report.round_to:
        t.add_row("round to", str(report.round_to))
    if recovery is not None:
        t.add_row("recovery", ", ".join(f"{k} {v:.1f} s" for k, v in recovery.items()) or "none")
    if budget is not None:
        t.add_row("GFLOPs", f"{budget['gflops_fraction']:.3f}x of the unpruned (target {budget['target']:g})")
        t.add_row("scan / allocation", f"{budget['scan_seconds']:.0f} s / {budget['allocation_seconds']:.0f} s")
        t.add_row("ratios", ", ".join(f"{k} {v:g}" for k, v in budget["ratios"].items()))
    stdout_console().print(t)
