"""Deployment benchmark: eager PyTorch vs ONNX Runtime latency, float vs int8, and the mAP of each file.

    .venv/bin/python bench/bench_deploy.py [--weights yolov5n.pt] [--data coco128.yaml] [--imgsz 320]
        [--ratios 0.2 0.3] [--threads 1 2] [--runs 30] [--calib-images 128] [--json]

Variants: the unpruned model and uniform structured cuts (L1, no fine-tuning), each run as (a) the BN-fused
eager PyTorch model, (b) its float ONNX in ONNX Runtime (CPU provider) and (c) its int8 QDQ ONNX
(orchestrator.deploy.quantize defaults). For each thread count every runtime of every variant is timed in one
round-robin loop, batch 1, the order rotating each round, so load from other processes hits all alike;
ratios are medians of per-round ratios against the eager unpruned model. mAP50-95 on the data's val split:
eager through ``validate``, ONNX files through ``validate_forward`` (same letterbox, NMS, pycocotools).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import numpy as np
from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))


def round_robin(fns: dict[str, object], runs: int, warmup: int) -> dict[str, list[float]]:
    """ms per call of each callable, one call of each per round, the starting one rotating."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t = time.perf_counter()
            fns[n]()
            out[n].append((time.perf_counter() - t) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--ratios", type=float, nargs="*", default=[0.2, 0.3])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calib-images", type=int, default=None)
    p.add_argument("--no-val", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch

    from orchestrator.deploy.export import onnx_bytes
    from orchestrator.deploy.measure import deployable
    from orchestrator.deploy.onnx_val import validate_onnx_bytes
    from orchestrator.deploy.ort_runtime import open_session
    from orchestrator.deploy.quantize import Int8Options, calibration_images, quantize_int8
    from orchestrator.prune import apply_ratios, uniform_ratios
    from orchestrator.yolo.checkpoint import load_model
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.val import ValSet, validate

    base = load_model(args.weights).eval()
    cfg = load_data_config(args.data)
    options = Int8Options(images=args.calib_images) if args.calib_images else Int8Options()
    calib = calibration_images(cfg.train, args.imgsz, options.images)
    vs = None if args.no_val else ValSet(cfg, args.imgsz, 32)
    models = {"unpruned": base}
    for r in args.ratios:
        m = copy.deepcopy(base)
        apply_ratios(m, uniform_ratios(m, r, "block", method="structured"), method="structured", granularity="block")
        models[f"structured {r:g}"] = m
    files: dict[str, dict[str, bytes]] = {}
    rows: dict[tuple[str, str], dict] = {}
    for name, m in models.items():
        f = onnx_bytes(m, imgsz=args.imgsz)
        q = quantize_int8(f, calib, options)
        files[name] = {"ORT float": f, "ORT int8": q}
        params = sum(p.numel() for p in m.parameters())
        for rt, size in (("eager", None), ("ORT float", len(f)), ("ORT int8", len(q))):
            rows[(name, rt)] = {"variant": name, "runtime": rt, "params": params, "onnx_mb": size and size / 1e6}
        if vs is not None:
            rows[(name, "eager")]["map50_95"] = validate(m, vs).map50_95
            for rt in ("ORT float", "ORT int8"):
                rows[(name, rt)]["map50_95"] = validate_onnx_bytes(files[name][rt], vs, threads=2).map50_95
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    xn = x.numpy()
    for threads in args.threads:
        torch.set_num_threads(threads)
        fns = {}
        for name, m in models.items():
            net = deployable(m)
            fns[(name, "eager")] = lambda net=net: net(x)
            for rt in ("ORT float", "ORT int8"):
                s = open_session(files[name][rt], threads=threads)
                fns[(name, rt)] = lambda s=s: s.run(None, {"images": xn})
        with torch.inference_mode():
            times = round_robin(fns, args.runs, args.warmup)
        ref = times[("unpruned", "eager")]
        for key, ts in times.items():
            rows[key][f"ms_{threads}t"] = statistics.median(ts)
            rows[key][f"speedup_{threads}t"] = statistics.median(np.array(ref) / np.array(ts))
    out = list(rows.values())
    if args.json:
        print(json.dumps({"imgsz": args.imgsz, "runs": args.runs, "rows": out}))
        return 0
    cols = [f"{k}_{t}t" for t in args.threads for k in ("ms", "speedup")]
    print(f"imgsz {args.imgsz}, batch 1, CPU, medians of {args.runs} round-robin runs; speed-up vs eager unpruned")
    print("| variant | runtime | ONNX MB | mAP50-95 | " + " | ".join(c.replace("_", " ") for c in cols) + " |")
    print("|---" * (4 + len(cols)) + "|")
    for r in out:
        mb = f"{r['onnx_mb']:.2f}" if r["onnx_mb"] else "-"
        ap = f"{r['map50_95']:.4f}" if "map50_95" in r else "-"
        vals = [f"{r[c]:.1f}" if c.startswith("ms") else f"{r[c]:.2f}x" for c in cols]
        print(f"| {r['variant']} | {r['runtime']} | {mb} | {ap} | " + " | ".join(vals) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
