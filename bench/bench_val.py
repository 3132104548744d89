"""Time ``validate`` against the bare model forward over the same batches; print the share spent outside the forward.

    .venv/bin/python bench/bench_val.py [--imgsz 320] [--batch 32] [--repeat 3] [--no-fuse]

Runs are interleaved (forward, validate, forward, ...) and the best is reported, because on shared
machines other processes only ever add time; process CPU time is printed too, which with
``OMP_NUM_THREADS=1`` does not depend on the machine's load. "Outside the forward" = data preparation
(decode, resize, letterbox: once per ValSet), preprocessing, NMS and COCOeval.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import add_asset_args

from orchestrator.yolo.checkpoint import load_model
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.val import ValSet, validate


def bare_forward(net: torch.nn.Module, vs: ValSet) -> tuple[float, float]:
    """(wall s, process CPU s) of the model alone over the ValSet's batches."""
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for b in vs.batches:
            net(b.images.float() / 255)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(ap)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-fuse", action="store_true")
    args = ap.parse_args()
    fuse = not args.no_fuse

    t = time.perf_counter()
    model = load_model(args.weights)
    t_load = time.perf_counter() - t
    cfg = load_data_config(args.data, need=("val",))
    t = time.perf_counter()
    vs = ValSet(cfg, args.imgsz, args.batch)
    t_data = time.perf_counter() - t
    net = copy.deepcopy(model).fuse().eval() if fuse else model.eval()
    bare_forward(net, vs)  # warm-up: first-call allocations and kernel selection

    fwd, val, parts, fwd_cpu, val_cpu = [], [], [], [], []
    for _ in range(args.repeat):
        w, c = bare_forward(net, vs)
        fwd.append(w)
        fwd_cpu.append(c)
        t, c = time.perf_counter(), time.process_time()
        r = validate(model, vs, fuse=fuse)
        val.append(time.perf_counter() - t)
        val_cpu.append(time.process_time() - c)
        parts.append(r.speed_ms)
    n = len(vs)
    # min, not mean: on a shared machine other processes only ever add time
    f, v = min(fwd), min(val)
    ms = {k: min(p[k] for p in parts) for k in parts[0]}
    total = v + t_data  # what one `orchestrator val` run spends after loading the model
    print(f"{n} images, imgsz {args.imgsz}, batch {args.batch}, fuse {fuse}, torch threads {torch.get_num_threads()}")
    print(f"model load {t_load:.2f} s | data preparation (ValSet, once) {t_data:.2f} s")
    print(f"bare forward {f:.2f} s ({1000 * f / n:.1f} ms/img) | validate {v:.2f} s (best of {args.repeat})")
    print("validate per image: " + ", ".join(f"{k} {x:.1f} ms" for k, x in ms.items()))
    print(f"mAP50-95 {r.map50_95:.5f}")
    print(f"outside the forward: {1 - f / v:.1%} of validate with a reused ValSet, {1 - f / total:.1%} with data prep")
    inside = ms["inference"]
    outside = sum(x for k, x in ms.items() if k != "inference")
    print(f"from validate's own clock (same run, load-robust): {outside / (inside + outside):.1%} outside the forward")
    fc, vc = min(fwd_cpu), min(val_cpu)
    print(f"CPU time (load-robust with OMP_NUM_THREADS=1): bare forward {fc:.2f} s, validate {vc:.2f} s, ", end="")
    print(f"{1 - fc / vc:.1%} outside the forward")
    print(f"spread of bare forward runs: {min(fwd):.2f}..{max(fwd):.2f} s (other processes on this machine add noise)")


if __name__ == "__main__":
    main()
