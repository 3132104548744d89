"""Training throughput of ``finetune`` (images/s, validation excluded) next to a bare forward+backward+step loop.

    .venv/bin/python bench/bench_train.py [--imgsz 320] [--batch 16] [--epochs 3] [--workers N] [--json]

The official train.py on this 2-core CPU: about 13 images/s at 320, batch 16 (128 images in 9.7 s per
epoch). Epoch 1 includes first-call allocations, so the median of the later epochs is the figure to
quote. "bare" runs the same model and loss on one fixed batch, with no data loading, augmentation or
EMA: the gap between the two is what the data pipeline and bookkeeping cost. On shared machines the
load changes from second to second: compare figures measured side by side.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
from common import add_asset_args

from orchestrator.yolo.augment import EpochBatchSampler, TrainDataset, collate
from orchestrator.yolo.checkpoint import load_model
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.hyp import get_hyp
from orchestrator.yolo.loss import YoloLoss
from orchestrator.yolo.train import TrainImages, finetune
from orchestrator.yolo.val import ValSet

OFFICIAL_IMAGES_PER_S = 128 / 9.7


def bare_steps(model: torch.nn.Module, imgs: torch.Tensor, targets: torch.Tensor, imgsz: int, steps: int) -> float:
    """Images/s of forward + loss + backward + SGD step on one fixed batch."""
    model = copy.deepcopy(model).train()
    loss_fn = YoloLoss(model, get_hyp("finetune"), imgsz)
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
    x = imgs.float() / 255
    loss_fn(model(x), targets).total.backward()  # warm-up
    opt.zero_grad()
    t = time.perf_counter()
    for _ in range(steps):
        loss_fn(model(x), targets).total.backward()
        opt.step()
        opt.zero_grad()
    return steps * len(imgs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(ap)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--bare-steps", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model = load_model(args.weights)
    cfg = load_data_config(args.data)
    t = time.perf_counter()
    train = TrainImages(cfg, args.imgsz)
    t_decode = time.perf_counter() - t
    vs = ValSet(cfg, args.imgsz, 32)

    ds = TrainDataset(train.image, train.labels, args.imgsz, get_hyp("finetune"))
    batch = collate([ds[k] for k in next(iter(EpochBatchSampler(len(ds), args.batch)))])
    bare = bare_steps(model, *batch, args.imgsz, args.bare_steps)

    r = finetune(
        copy.deepcopy(model), cfg, args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers,
        val_set=vs, train_images=train,
    )  # fmt: skip
    per_epoch = [e.images_per_s for e in r.history]
    steady = statistics.median(per_epoch[1:] or per_epoch)
    out = {
        "imgsz": args.imgsz,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "decode_s": round(t_decode, 2),
        "finetune_images_per_s": round(steady, 2),
        "finetune_images_per_s_by_epoch": [round(x, 2) for x in per_epoch],
        "val_s_by_epoch": [round(e.val_s, 2) for e in r.history],
        "bare_step_images_per_s": round(bare, 2),
        "official_images_per_s": round(OFFICIAL_IMAGES_PER_S, 2),
        "load_avg": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:32s} {v}")


if __name__ == "__main__":
    main()
