"""Uniform ratios against the warm start's global-magnitude allocation, side by side at each sparsity.

    .venv/bin/python bench/bench_allocation.py [--weights yolov5n.pt] [--data coco128.yaml] [--imgsz 320]
        [--granularity block] [--targets 0.1,0.2,0.3,0.4,0.5] [--step 0.05] [--max 0.8] [--threads 2] [--json]
    .venv/bin/python bench/bench_allocation.py --sensitivity 0.5   # each group cut alone, the rest intact

No fine-tuning: this isolates what the allocation alone keeps. Both variants prune before BN fusion
with per-conv L1 masks; the allocation removes at least as many weights as the uniform ratio (the
nonzero column shows it). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--granularity", default="block", choices=("layer", "block", "stage"))
    p.add_argument("--targets", default="0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--step", type=float, default=0.05)
    p.add_argument("--max", type=float, default=0.8, help="upper bound of every group's ratio")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sensitivity", type=float, default=None, help="instead: cut each group alone by this ratio")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    import torch

    from orchestrator.prune import (
        apply_ratios,
        conv_layers,
        copy_pruned,
        magnitude_allocation,
        prunable_groups,
        uniform_ratios,
    )
    from orchestrator.yolo.checkpoint import load_model
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.train import VAL_BATCH
    from orchestrator.yolo.val import ValSet, validate

    torch.set_num_threads(a.threads)
    model = load_model(a.weights).eval()
    val = ValSet(load_data_config(a.data), a.imgsz, VAL_BATCH, stride=max(32, int(model.stride.max())))
    groups = prunable_groups(model, a.granularity)
    bounds = {g: (0.0, a.max) for g in groups}

    def evaluate(ratios: dict[str, float]) -> tuple[float, int]:
        m = copy_pruned(model)
        apply_ratios(m, ratios, granularity=a.granularity)
        nonzero = sum(int((c.weight != 0).sum()) for c in conv_layers(m).values())
        return float(validate(m, val, device=torch.device("cpu")).map50_95), nonzero

    if a.sensitivity is not None:
        base, _ = evaluate({})
        sens = []
        for g, convs in groups.items():
            got, _ = evaluate({g: a.sensitivity})
            weights = sum(conv_layers(model)[c].weight.numel() for c in convs)
            sens.append({"group": g, "weights": weights, "map50_95": got, "drop": base - got})
        if a.json:
            print(json.dumps({"unpruned": base, "ratio": a.sensitivity, "groups": sens}))
            return 0
        print(f"unpruned mAP50-95 {base:.4f}; each group alone cut by {a.sensitivity:g}\n")
        print("| group | conv weights | mAP50-95 | drop |\n|---|---|---|---|")
        for r in sens:
            print(f"| {r['group']} | {r['weights']:,} | {r['map50_95']:.4f} | {r['drop']:+.4f} |")
        return 0

    rows = []
    for t in (float(x) for x in a.targets.split(",")):
        u_map, u_nz = evaluate(uniform_ratios(model, t, a.granularity))
        alloc = magnitude_allocation(model, groups, t, bounds, a.step)
        w_map, w_nz = evaluate(alloc)
        rows.append(
            {
                "target": t,
                "uniform_map50_95": u_map,
                "uniform_nonzero": u_nz,
                "warm_map50_95": w_map,
                "warm_nonzero": w_nz,
                "warm_ratios": alloc,
            }
        )
    if a.json:
        print(json.dumps(rows))
        return 0
    print(f"{Path(a.weights).name} at {a.imgsz}, {a.granularity} groups, no fine-tune (mAP50-95 on {a.data})\n")
    print("| target | uniform mAP | uniform nonzero conv weights | warm mAP | warm nonzero conv weights |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target']:g} | {r['uniform_map50_95']:.4f} | {r['uniform_nonzero']:,} | "
            f"{r['warm_map50_95']:.4f} | {r['warm_nonzero']:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
