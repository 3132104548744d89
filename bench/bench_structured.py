"""Structured cuts of yolov5n with one-shot recovery, step by step: mAP50-95, GFLOPs and seconds per step.

    .venv/bin/python bench/bench_structured.py [--ratios 0.1,0.2] [--calib-images 32,128] [--threads 2]
        [--variants "l1:none;l1:compensate;output_error:compensate,reconstruct"] [--maps t07.json,...] [--json]

Uniform block ratios, no fine-tuning; calibration images come from the train split, mAP from val.
`--ridge 0.001,0.1`: the reconstruction at several ridge strengths (default `recovery.RIDGE`).
`--maps`: also the ratio maps of earlier `orchestrator prune --target-gflops F --json` runs (row "F x map").
`--calib-images 32,128`: each count in turn (the first so many train images of one seeded sample).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))

VARIANTS = (
    "l1:none;l1:compensate;l1:recalibrate;l1:compensate,recalibrate;l1:compensate,reconstruct;"
    "output_error:compensate;output_error:compensate,reconstruct;output_error:compensate,reconstruct,recalibrate"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--ratios", default="0.1,0.2")
    p.add_argument("--variants", default=VARIANTS, help="importance:step,step;... (step list 'none' = plain cut)")
    p.add_argument("--calib-images", default="32", help="comma list of calibration image counts")
    p.add_argument("--maps", default="", help="comma list of `prune --target-gflops --json` outputs")
    p.add_argument("--ridge", default=None, help="reconstruction ridge strength(s), comma list (default RIDGE)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    import torch

    from orchestrator.prune import uniform_ratios
    from orchestrator.prune.calibration import calibration_set
    from orchestrator.prune.oneshot import OneShot
    from orchestrator.prune.recovery import RIDGE, parse_steps
    from orchestrator.prune.unstructured import deployable
    from orchestrator.yolo.checkpoint import load_model
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.flops import count_gflops
    from orchestrator.yolo.val import ValSet, validate

    torch.set_num_threads(a.threads)
    model = load_model(a.weights).eval()
    data = load_data_config(a.data)
    val = ValSet(data, a.imgsz, 32, stride=max(32, int(model.stride.max())))
    counts = [int(x) for x in a.calib_images.split(",")]
    g0 = count_gflops(deployable(model), a.imgsz)
    base = validate(model, val, device="cpu").map50_95
    rows = []
    ridges = [float(x) for x in a.ridge.split(",")] if a.ridge else [RIDGE]
    cuts = [(f"{x:g}", uniform_ratios(model, x, "block", method="structured")) for x in map(float, a.ratios.split(","))]
    shot = None
    for f in filter(None, a.maps.split(",")):
        budget = json.loads(Path(f).read_text())["budget"]
        cuts.append((f"{budget['target']:g}x map", budget["ratios"]))
    for n, (label, ratios), spec, ridge in itertools.product(counts, cuts, a.variants.split(";"), ridges):
        if shot is None or len(shot.calib) != n:
            shot = OneShot(model, calibration_set(data, a.imgsz, n))
        imp, steps = spec.split(":")
        done = shot.cut(ratios, importance=imp, steps=parse_steps(steps), ridge=ridge)
        rows.append(
            {
                "ratio": label,
                "calib_images": n,
                "ridge": ridge,
                "importance": imp,
                "steps": list(done.recovery.steps),
                "map50_95": validate(done.model, val, device="cpu").map50_95,
                "gflops_x": count_gflops(deployable(done.model), a.imgsz) / g0,
                "params": done.prune.params_after,
                "seconds": {"cut": done.cut_seconds, **done.recovery.seconds},
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps({"unpruned": base, "rows": rows}))
        return 0
    print(f"unpruned mAP50-95 {base:.4f}; calibration images from train, no fine-tune\n")
    print(
        "| ratio | calib images | importance | recovery | ridge | GFLOPs | params | mAP50-95 | seconds (cut; steps) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        secs = "; ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items())
        print(
            f"| {r['ratio']} | {r['calib_images']} | {r['importance']} | {' + '.join(r['steps']) or 'none'} | "
            f"{r['ridge']:g} | "
            f"{r['gflops_x']:.3f}x | "
            f"{r['params']:,} | {r['map50_95']:.4f} | {secs} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
