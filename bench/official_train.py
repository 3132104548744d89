"""Runs INSIDE the official YOLOv5 venv (PyPI ``yolov5`` 7.0.x), never imports this project. One of:

- one training run of official train.py (default), its training time per epoch taken from its own callbacks
  (validation excluded), and the mAP of its final validation of ``best.pt`` with the conv sparsity of that file;
- ``--val-only``: one run of official val.py (its own mAP50-95 and mAP50 printed; the caller times the process);
- ``--prune-to OUT.pt --amount A``: the official guide's ``prune(model, A)`` (``utils.torch_utils.prune``: L1
  on every Conv2d) on the float model as loaded, before any BN fusion, saved in the official layout (fp16).

    OFFICIAL_PYTHON bench/official_train.py DATA.yaml WEIGHTS.pt OUT_DIR --imgsz 320 --batch 16 --epochs 1

Prints one line ``OFFICIAL_JSON {...}``. Official val.py's NMS time limit is lifted (``lift_nms_time_limit``):
accuracy must not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def conv_sparsity(weights: str) -> float:
    """Fraction of exactly-zero weights over every Conv2d of the checkpoint's model (EMA if it has one)."""
    import torch

    ck = torch.load(weights, map_location="cpu")
    model = (ck.get("ema") or ck["model"]).float()
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return zeros / total


def lift_nms_time_limit() -> list[int]:
    """Official val.py's NMS gives up after 0.5 + 0.05 * batch seconds of wall time and drops the rest of the
    batch's images. On a loaded shared CPU a pruned model's many low-confidence boxes cross that limit, and the
    same file then scores anywhere from 0.13 to 0.24 mAP50-95 from run to run (measured 2026-11-30 at load average
    5-7). Accuracy is compared here, not NMS speed, so ``yolov5.val`` gets the same NMS with a clock that does not
    move (ours has no limit). Returns a one-element count of the calls that would have crossed the limit."""
    import time as real_time
    import types

    from yolov5 import val
    from yolov5.utils import general

    nms = general.non_max_suppression
    frozen = types.SimpleNamespace(time=lambda: 0.0)
    free = types.FunctionType(nms.__code__, {**nms.__globals__, "time": frozen}, nms.__name__, nms.__defaults__)
    free.__kwdefaults__ = nms.__kwdefaults__
    hits = [0]

    def no_limit_nms(prediction, *a, **k):
        t = real_time.perf_counter()
        out = free(prediction, *a, **k)
        bs = (prediction[0] if isinstance(prediction, (list, tuple)) else prediction).shape[0]
        hits[0] += real_time.perf_counter() - t > 0.5 + 0.05 * bs
        return out

    val.non_max_suppression = no_limit_nms
    return hits


def repo_layout(src: str, dst: str) -> str:
    """PyPI yolov5's train.py pickles its classes as ``yolov5.models.*``; the GitHub repository's checkpoints (and
    loaders written for them, ours included) name them ``models.*``. Save ``src`` again under the repository's
    module names, weights untouched, so that both validators read the same file. Run it last: it renames the
    package's classes for the rest of this process."""
    import importlib
    import sys

    import torch

    ck = torch.load(src, map_location="cpu")
    for name in ("yolo", "common"):
        mod = importlib.import_module(f"yolov5.models.{name}")
        sys.modules[f"models.{name}"] = mod  # pickle checks that the name it writes finds the same class
        for obj in vars(mod).values():
            if isinstance(obj, type) and obj.__module__ == mod.__name__:
                obj.__module__ = f"models.{name}"
    torch.save(ck, dst)
    return dst


def prune_to(weights: str, out: str, amount: float) -> dict:
    import torch
    from yolov5.utils.torch_utils import prune

    ck = torch.load(weights, map_location="cpu")
    model = ck["model"].float()
    prune(model, amount)
    ck["model"] = model.half()
    ck.pop("ema", None)
    torch.save(ck, out)
    return {"out": out, "conv_sparsity": conv_sparsity(out)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="train.py --seed (default 0, as its own)")
    ap.add_argument("--noautoanchor", action="store_true", help="train.py --noautoanchor")
    ap.add_argument(
        "--val-only", action="store_true", help="run official val.py instead (the caller times the process)"
    )
    ap.add_argument("--prune-to", default=None, help="prune WEIGHTS with the official prune() and save here")
    ap.add_argument("--amount", type=float, default=0.3, help="with --prune-to: the ratio (default 0.3)")
    args = ap.parse_args()

    # yolov5 7.0 predates torch.load(weights_only=True) as the default; it loads its own trusted yolov5n.pt
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import numpy as np

    if not hasattr(np, "trapz"):  # its val.py integrates AP with np.trapz, renamed trapezoid in numpy 2
        np.trapz = np.trapezoid
    if args.prune_to:
        print("OFFICIAL_JSON " + json.dumps(prune_to(args.weights, args.prune_to, args.amount)))
        return
    from yolov5 import train
    from yolov5.utils import general
    from yolov5.utils.callbacks import Callbacks

    # check_dataset downloads Arial.ttf for plots: none are drawn here (noplots), and the machine may be offline
    general.check_font = train.check_font = lambda *a, **k: None
    nms_hits = lift_nms_time_limit()
    if args.val_only:
        from yolov5 import val

        kw = dict(imgsz=args.imgsz, batch_size=args.batch, device="cpu", workers=args.workers, plots=False)
        r = val.run(data=args.data, weights=args.weights, project=args.out, name="val", exist_ok=True, **kw)
        out = {"map50_95": float(r[0][3]), "map50": float(r[0][2]), "conv_sparsity": conv_sparsity(args.weights)}
        out["nms_over_time_limit"] = nms_hits[0]
        print("OFFICIAL_JSON " + json.dumps(out))
        return

    epochs: list[float] = []
    images: list[int] = []
    t0 = [0.0]
    final: dict = {}
    cb = Callbacks()
    cb.register_action("on_train_epoch_start", callback=lambda *a, **k: t0.__setitem__(0, time.perf_counter()))
    cb.register_action("on_train_epoch_end", callback=lambda *a, **k: epochs.append(time.perf_counter() - t0[0]))
    cb.register_action("on_train_batch_end", callback=lambda model, ni, imgs, *a, **k: images.append(len(imgs)))
    # on_train_end(last, best, epoch, results): results = (P, R, mAP50, mAP50-95, losses...) of its final val of
    # best.pt (best by its fitness, 0.1 mAP50 + 0.9 mAP50-95, over the per-epoch validations of the EMA)
    cb.register_action("on_train_end", callback=lambda last, best, epoch, results: final.update(best=best, r=results))
    opt = train.parse_opt(True)
    for k, v in dict(
        data=args.data, weights=args.weights, imgsz=args.imgsz, batch_size=args.batch, epochs=args.epochs,
        device="cpu", workers=args.workers, project=args.out, name="run", exist_ok=True, noplots=True,
        seed=args.seed, noautoanchor=args.noautoanchor,
    ).items():  # fmt: skip
        setattr(opt, k, v)
    train.main(opt, callbacks=cb)
    per_epoch = len(images) and sum(images) // max(len(epochs), 1)
    out = {"epoch_s": epochs, "images_per_epoch": per_epoch, "nms_over_time_limit": nms_hits[0]}
    if final:
        best = str(final["best"])
        out.update(
            map50_95=float(final["r"][3]), map50=float(final["r"][2]), best=best, conv_sparsity=conv_sparsity(best)
        )
        out["best_repo_layout"] = repo_layout(best, str(Path(best).with_name("best-repo-layout.pt")))
    print("OFFICIAL_JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
