"""How far can a channel-pruned model come back without real training? The same cut, recovered on the train
images as the product does, and, as a diagnostic only, on the val images it is then scored on.

    .venv/bin/python bench/bench_recovery_ceiling.py --map t07.json [--epochs 3] [--lr 3e-5]

``--map``: the JSON of an ``orchestrator prune --target-gflops F --json`` run (its ratio map is cut here).
Rows: one-shot recovery (compensate + reconstruct) calibrated on 32 / 128 train images and on the 64 val
images; then, from the 128-image model, ``--epochs`` of label-free feature distillation (every Conv's
output matched to the unpruned model's on the channels it kept, Adam, BN statistics frozen, the
fine-tune preset's augmentation) on the train images and on the val images; and the ``finetune`` preset
(labels) on the train images. Rows marked "val" fit on the images they are scored on: they bound what
recovery and distillation could reach with perfect data, they are not results. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))


def val_calibration(data, imgsz: int):
    """The val images as a calibration set (diagnostic rows only: the product never calibrates on val)."""
    from orchestrator.prune.calibration import CalibrationSet, letterboxed

    return CalibrationSet(tuple(data.val), letterboxed(list(data.val), imgsz))


def feature_distill(student, teacher, kept, images, imgsz: int, epochs: int, lr: float, batch: int, val_set):
    """Label-free distillation through the kept channels; val mAP50-95 after each epoch."""
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader

    from orchestrator.yolo.augment import EpochBatchSampler, TrainDataset, collate
    from orchestrator.yolo.hyp import PRESETS
    from orchestrator.yolo.model import Conv
    from orchestrator.yolo.val import validate

    def frozen_bn(m):
        m.train()
        for x in m.modules():
            if isinstance(x, nn.modules.batchnorm._BatchNorm):
                x.eval()

    ds = TrainDataset(images.image, images.labels, imgsz, PRESETS["finetune"], seed=0)
    sampler = EpochBatchSampler(len(ds), batch, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=2, persistent_workers=True)
    s_convs = {n: m for n, m in student.named_modules() if isinstance(m, Conv)}
    t_convs = {n: m for n, m in teacher.named_modules() if isinstance(m, Conv)}
    idx = {n: torch.tensor(kept[f"{n}.conv"].out) for n in s_convs}
    got_s, got_t = {}, {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: got_s.__setitem__(n, o)) for n, m in s_convs.items()]
    hooks += [m.register_forward_hook(lambda _m, _i, o, n=n: got_t.__setitem__(n, o)) for n, m in t_convs.items()]
    teacher.eval().requires_grad_(False)
    student.requires_grad_(True)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    total, step, maps = epochs * len(loader), 0, []
    frozen_bn(student)
    try:
        for epoch in range(epochs):
            sampler.set_epoch(epoch, mosaic=True)
            for imgs, _ in loader:
                imgs = imgs.float() / 255
                for g in opt.param_groups:
                    g["lr"] = lr * (1 - step / total)
                student(imgs)
                with torch.no_grad():
                    teacher(imgs)
                loss = sum(
                    (got_s[n] - got_t[n].index_select(1, idx[n])).pow(2).mean()
                    / got_t[n].index_select(1, idx[n]).pow(2).mean().clamp_min(1e-6)
                    for n in s_convs
                ) / len(s_convs)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
            maps.append(validate(student.eval(), val_set).map50_95)
            frozen_bn(student)
    finally:
        for h in hooks:
            h.remove()
    return maps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--map", required=True, help="JSON of an `orchestrator prune --target-gflops --json` run")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)

    import torch

    from orchestrator.prune.calibration import calibration_set
    from orchestrator.prune.oneshot import OneShot
    from orchestrator.prune.unstructured import deployable
    from orchestrator.yolo.checkpoint import load_model
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.flops import count_gflops
    from orchestrator.yolo.train import VAL_BATCH, TrainImages, finetune
    from orchestrator.yolo.val import ValSet, validate

    torch.set_num_threads(a.threads)
    budget = json.loads(Path(a.map).read_text())["budget"]
    data = load_data_config(a.data, need=("train", "val"))
    teacher = load_model(a.weights).float().eval()
    val_set = ValSet(data, a.imgsz, VAL_BATCH, stride=32)
    g0 = count_gflops(deployable(teacher), a.imgsz)
    rows: list[tuple[str, str, str]] = []

    def cut(calib):
        t0 = time.perf_counter()
        done = OneShot(teacher, calib).cut(
            budget["ratios"], granularity="block", importance="output_error", steps=("compensate", "reconstruct")
        )
        return done.model, done.kept, time.perf_counter() - t0

    results = {}
    for name, calib in (
        ("32 train images", calibration_set(data, a.imgsz, 32)),
        ("128 train images", calibration_set(data, a.imgsz, 128)),
        ("the 64 val images (diagnostic)", val_calibration(data, a.imgsz)),
    ):
        model, kept, secs = cut(calib)
        results[name] = (model, kept)
        score = validate(model, val_set).map50_95
        rows.append((f"one-shot recovery on {name}", f"{score:.4f}", f"{secs:.0f}"))
        print(rows[-1], file=sys.stderr, flush=True)
    gx = count_gflops(deployable(results["128 train images"][0]), a.imgsz) / g0

    base, kept = results["128 train images"]
    train = TrainImages(data, a.imgsz)
    on_val = TrainImages(dataclasses.replace(data, train=data.val), a.imgsz)
    for name, images in (("train", train), ("val (diagnostic)", on_val)):
        t0 = time.perf_counter()
        maps = feature_distill(copy.deepcopy(base), teacher, kept, images, a.imgsz, a.epochs, a.lr, a.batch, val_set)
        rows.append(
            (f"+ {a.epochs} epochs feature distillation on {name}", " / ".join(f"{m:.4f}" for m in maps),
             f"{time.perf_counter() - t0:.0f}")
        )  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    r = finetune(copy.deepcopy(base), data, a.epochs, imgsz=a.imgsz, batch=16, val_set=val_set, train_images=train)
    rows.append(
        (f"+ {a.epochs} epochs `finetune` preset (labels) on train", " / ".join(f"{h.map50_95:.4f}" for h in r.history),
         f"{time.perf_counter() - t0:.0f}")
    )  # fmt: skip

    print(f"{a.map}: target {budget['target']}, {gx:.3f}x GFLOPs; unpruned {budget['unpruned_map50_95']:.4f}\n")
    print("| recovery | val mAP50-95 (per epoch) | seconds |\n|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
