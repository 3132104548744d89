"""Fine-tuning a recovered channel-pruned model: val mAP50-95 after each epoch, per set of hyperparameters.

    .venv/bin/python bench/bench_structured_finetune.py --model t07.pt [--epochs 3] [--variants NAME ...]

``--model`` is a structured cut saved by ``orchestrator prune --method structured --data ...`` (recovered);
every variant starts from it with the same seed, the ``finetune`` preset plus the variant's overrides
(``Hyp`` fields; ``box``/``obj``/``cls`` 0 drop the label loss), the unpruned model as teacher where the
variant distills. Prints a markdown table: the model before any update, then one row per variant.
"""

from __future__ import annotations

import argparse
import sys

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))

NO_LABELS = {"box": 0.0, "obj": 0.0, "cls": 0.0}
# name -> (Hyp overrides on the finetune preset, distillation weight; 0 = no teacher)
VARIANTS: dict[str, tuple[dict, float]] = {
    "preset": ({}, 0.0),
    "lr 1e-4": ({"lr0": 1e-4}, 0.0),
    "BN statistics updated": ({"freeze_bn_stats": False}, 0.0),
    "no mosaic": ({"mosaic": 0.0}, 0.0),
    "preset, distill 1": ({}, 1.0),
    "no mosaic, lr 1e-4, distill 1": ({"mosaic": 0.0, "lr0": 1e-4}, 1.0),
    "lr 1e-3, nbs 16 (4x the steps), distill 1": ({"lr0": 1e-3, "nbs": 16}, 1.0),
    "distill only (weight 10), lr 1e-3, nbs 16": ({**NO_LABELS, "lr0": 1e-3, "nbs": 16}, 10.0),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--model", required=True, help="the recovered structured checkpoint to fine-tune")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    a = p.parse_args(argv)

    import torch

    from orchestrator.yolo.checkpoint import load_checkpoint
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.hyp import PRESETS
    from orchestrator.yolo.train import VAL_BATCH, TrainImages, finetune
    from orchestrator.yolo.val import ValSet, validate

    cfg = load_data_config(a.data, need=("train", "val"))
    val_set = ValSet(cfg, a.imgsz, VAL_BATCH, stride=32)
    train_images = TrainImages(cfg, a.imgsz)
    teacher = load_checkpoint(a.weights).model.float().eval()
    before = validate(load_checkpoint(a.model).model.float().eval(), val_set).map50_95
    print(f"{a.model}, imgsz {a.imgsz}, batch {a.batch}, {a.epochs} epochs; val mAP50-95 before: {before:.4f}\n")
    heads = " | ".join(f"epoch {e + 1}" for e in range(a.epochs))
    print(f"| variant | {heads} | train s / epoch |\n|---|{'---|' * a.epochs}---|")
    for name in a.variants:
        over, weight = VARIANTS[name]
        torch.manual_seed(0)
        model = load_checkpoint(a.model).model.float()
        r = finetune(
            model, cfg, a.epochs, imgsz=a.imgsz, batch=a.batch, hyp=PRESETS["finetune"].with_overrides(**over),
            val_set=val_set, train_images=train_images, teacher=teacher if weight else None, distill=weight,
        )  # fmt: skip
        maps = " | ".join(f"{h.map50_95:.4f}" for h in r.history)
        train_s = sum(h.train_s for h in r.history) / len(r.history)
        print(f"| {name} | {maps} | {train_s:.1f} |", flush=True)
        del model, r
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
