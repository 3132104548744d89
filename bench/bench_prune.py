"""Pruning benchmark on the real assets: size, GFLOPs, interleaved CPU speed-up and mAP before fine-tuning.

    .venv/bin/python bench/bench_prune.py [--weights yolov5n.pt] [--data coco128.yaml] [--imgsz 320]
        [--ratio 0.3] [--runs 50] [--threads 2] [--no-val] [--json]

Every variant is timed against the unpruned model in this process, interleaved run by run, so
load from other processes hits both alike (see orchestrator.deploy.measure). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))


def variants(ratio: float) -> list[tuple[str, dict]]:
    return [
        ("unpruned", {}),
        (f"unstructured uniform {ratio}", {"method": "unstructured"}),
        (f"structured uniform {ratio} (l1)", {"method": "structured"}),
        (f"structured uniform {ratio} (l1, round to 8)", {"method": "structured", "round_to": 8}),
        (f"structured uniform {ratio} (bn_scale)", {"method": "structured", "importance": "bn_scale"}),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-val", action="store_true", help="skip mAP")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from orchestrator.deploy.measure import measure
    from orchestrator.prune import apply_ratios, uniform_ratios
    from orchestrator.yolo.checkpoint import load_model

    base = load_model(args.weights)
    vs = None
    if not args.no_val:
        from orchestrator.yolo.data import load_data_config
        from orchestrator.yolo.val import ValSet, validate

        vs = ValSet(load_data_config(args.data, need=("val",)), args.imgsz, 32)
    rows = []
    for name, kw in variants(args.ratio):
        m = copy.deepcopy(base)
        t = time.perf_counter()
        if kw:
            method = kw["method"]
            groups_for = "structured" if method == "structured" else "unstructured"
            apply_ratios(m, uniform_ratios(m, args.ratio, method=groups_for), **kw)
        prune_s = time.perf_counter() - t
        meas = measure(
            m, imgsz=args.imgsz, batch=args.batch, device=args.device, baseline=base, runs=args.runs,
            threads=args.threads,
        )  # fmt: skip
        row = {"variant": name, "prune_s": prune_s, **meas.to_dict()}
        if vs is not None:
            row["map50_95"] = validate(m, vs, device=args.device).map50_95
        rows.append(row)
        print(f"done: {name}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows))
        return 0
    b = rows[0]
    print(
        f"\n{Path(args.weights).name}, imgsz {args.imgsz}, batch {args.batch}, {rows[0]['device']}, "
        f"threads {rows[0]['threads']}, {args.runs} interleaved runs\n"
    )
    print("| variant | params | GFLOPs | size MB (zip) | latency ms | speed-up | mAP50-95 (no fine-tune) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mp = f"{r['map50_95']:.4f}" if "map50_95" in r else "-"
        print(
            f"| {r['variant']} | {r['params']:,} ({r['params'] / b['params']:.3f}x) | {r['gflops']:.3f} "
            f"({r['gflops'] / b['gflops']:.3f}x) | {r['size_mb']:.2f} ({r['size_zip_mb']:.2f}) | "
            f"{r['latency_ms']:.1f} | {r['speedup']:.2f}x | {mp} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
