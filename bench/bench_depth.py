"""Depth pruning against channel pruning at equal GFLOPs, one shot, no fine-tune: what ``pruning.depth`` buys.

    ORCHESTRATOR_ASSETS=../shared/assets .venv/bin/python bench/bench_depth.py [--depths 0,1,...,7]
        [--compare 2,4,7] [--calib-images 32] [--threads 2] [--runs 30] [--json]

yolov5n at ``--imgsz`` (320): the bottlenecks are ranked once on ``--calib-images`` train images (residual ones first,
so totals up to 7 drop the backbone's), then for each total the shallower copy is refit by ``reconstruct`` on the
same train images (what a study's trial does) and measured: val mAP50-95, GFLOPs, and its ONNX Runtime speed-up
over the unpruned float ONNX, timed interleaved in this process with ``--threads``. For the totals in ``--compare``,
a uniform channel cut (block granularity, ``output_error``, ``compensate, reconstruct``, channels to a multiple of 8)
with no more GFLOPs is measured the same way: the structured study's default cut at that cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))


def _uniform_at(model, groups: list[str], target: float, imgsz: int) -> tuple[float, float]:
    """The smallest uniform block ratio whose channel cut has at most ``target`` of the GFLOPs (bisection)."""
    from orchestrator.prune.budget_cut import gflops_fraction

    lo, hi = 0.0, 0.9
    for _ in range(14):
        mid = (lo + hi) / 2
        if gflops_fraction(model, dict.fromkeys(groups, mid), "block", imgsz, 8) <= target:
            hi = mid
        else:
            lo = mid
    return hi, gflops_fraction(model, dict.fromkeys(groups, hi), "block", imgsz, 8)


def main(argv: list[str] | None = None) -> int:
    import torch

    from orchestrator.deploy.export import onnx_bytes
    from orchestrator.deploy.ort_runtime import open_session, time_sessions
    from orchestrator.prune.calibration import calibration_set
    from orchestrator.prune.depth import c3_blocks
    from orchestrator.prune.layers import prunable_groups
    from orchestrator.prune.oneshot import OneShot
    from orchestrator.yolo.checkpoint import load_model
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.flops import count_gflops
    from orchestrator.yolo.val import ValSet, validate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_asset_args(p)
    p.add_argument("--depths", default="0,1,2,3,4,5,6,7")
    p.add_argument("--compare", default="2,4,7", help="depth totals also compared to a channel cut ('' for none)")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    compare = {int(d) for d in args.compare.split(",") if d}
    model = load_model(args.weights).float().eval()
    data = load_data_config(args.data)
    val_set = ValSet(data, args.imgsz, 32)
    t0 = time.perf_counter()
    shot = OneShot(model, calibration_set(data, args.imgsz, args.calib_images))
    ranking = shot.ranking
    rank_s = time.perf_counter() - t0
    print(f"ranked {len(ranking)} bottlenecks in {rank_s:.0f} s:", [(r.block, r.index) for r in ranking], flush=True)
    base_gflops = count_gflops(model, args.imgsz)
    base_session = open_session(onnx_bytes(model, imgsz=args.imgsz), device="cpu", threads=args.threads)
    groups = list(prunable_groups(model, "block", method="structured"))

    def row(what: str, m: torch.nn.Module, seconds: float) -> dict:
        res = validate(m, val_set, device="cpu")
        session = open_session(onnx_bytes(m, imgsz=args.imgsz), device="cpu", threads=args.threads)
        t = time_sessions(session, base_session, args.imgsz, runs=args.runs, warmup=5, threads=args.threads)
        out = {
            "cut": what,
            "bottlenecks": sum(b.bottlenecks for b in c3_blocks(m)),
            "gflops_fraction": round(count_gflops(m, args.imgsz) / base_gflops, 3),
            "map50_95": round(float(res.map50_95), 4),
            "ms": round(t.ms, 2),
            "ort_speedup": round(t.speedup, 3),
            "refit_s": round(seconds, 1),
        }
        print(out, flush=True)
        return out

    rows = []
    for d in depths:
        t0 = time.perf_counter()
        done = shot.shallower(d, "--depths")
        rows.append({"depth": d, **row(f"depth {d}", done.model, time.perf_counter() - t0)})
        if d in compare and d:
            ratio, frac = _uniform_at(model, groups, rows[-1]["gflops_fraction"], args.imgsz)
            t0 = time.perf_counter()
            cut = shot.cut(
                dict.fromkeys(groups, ratio), granularity="block", importance="output_error", round_to=8,
                steps=("compensate", "reconstruct"),
            )  # fmt: skip
            rows.append({"depth": d, **row(f"channels {ratio:.3f}", cut.model, time.perf_counter() - t0)})
    if args.json:
        print(json.dumps({"imgsz": args.imgsz, "threads": args.threads, "rank_s": rank_s, "rows": rows}, indent=1))
    else:
        print("| cut | bottlenecks | GFLOPs | mAP50-95 | ORT ms | ORT speed-up | refit s |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['cut']} | {r['bottlenecks']} | {r['gflops_fraction']:.3f}x | {r['map50_95']:.4f} | "
                  f"{r['ms']:.1f} | {r['ort_speedup']:.2f}x | {r['refit_s']:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
