"""Runs INSIDE the official YOLOv5 venv (PyPI ``yolov5`` 7.0.x), never imports this project: one training run
of official train.py, its training time per epoch taken from its own callbacks (validation excluded), or
with ``--val-only`` one run of official val.py (its mAP50-95 printed; the caller times the whole process).

    OFFICIAL_PYTHON bench/official_train.py DATA.yaml WEIGHTS.pt OUT_DIR --imgsz 320 --batch 16 --epochs 1

Prints one JSON object: seconds of each epoch's training loop and the number of training images.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--val-only", action="store_true", help="run official val.py instead (the caller times the process)"
    )
    args = ap.parse_args()

    # yolov5 7.0 predates torch.load(weights_only=True) as the default; it loads its own trusted yolov5n.pt
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import numpy as np

    if not hasattr(np, "trapz"):  # its val.py integrates AP with np.trapz, renamed trapezoid in numpy 2
        np.trapz = np.trapezoid
    from yolov5 import train
    from yolov5.utils import general
    from yolov5.utils.callbacks import Callbacks

    # check_dataset downloads Arial.ttf for plots: none are drawn here (noplots), and the machine may be offline
    general.check_font = train.check_font = lambda *a, **k: None
    if args.val_only:
        from yolov5 import val

        kw = dict(imgsz=args.imgsz, batch_size=args.batch, device="cpu", workers=args.workers, plots=False)
        r = val.run(data=args.data, weights=args.weights, project=args.out, name="val", exist_ok=True, **kw)
        print("OFFICIAL_JSON " + json.dumps({"map50_95": float(r[0][3])}))
        return

    epochs: list[float] = []
    images: list[int] = []
    t0 = [0.0]
    cb = Callbacks()
    cb.register_action("on_train_epoch_start", callback=lambda *a, **k: t0.__setitem__(0, time.perf_counter()))
    cb.register_action("on_train_epoch_end", callback=lambda *a, **k: epochs.append(time.perf_counter() - t0[0]))
    cb.register_action("on_train_batch_end", callback=lambda model, ni, imgs, *a, **k: images.append(len(imgs)))
    opt = train.parse_opt(True)
    for k, v in dict(
        data=args.data, weights=args.weights, imgsz=args.imgsz, batch_size=args.batch, epochs=args.epochs,
        device="cpu", workers=args.workers, project=args.out, name="run", exist_ok=True, noplots=True,
    ).items():  # fmt: skip
        setattr(opt, k, v)
    train.main(opt, callbacks=cb)
    per_epoch = len(images) and sum(images) // max(len(epochs), 1)
    print("OFFICIAL_JSON " + json.dumps({"epoch_s": epochs, "images_per_epoch": per_epoch}))


if __name__ == "__main__":
    main()
