"""A trial's memory and loader speed against the dataset's size: peak PSS, time to the first step, images/s.

Builds synthetic datasets of N 640x480 JPEG images (smooth content, COCO-like box counts: Poisson(7) boxes per
image) in a temporary folder, then, in a fresh process per row as a trial worker does: builds the val set,
fine-tunes yolov5n for ``--steps`` batches and validates. A thread samples the proportional set size (PSS,
``/proc/PID/smaps_rollup``) of the process and its loader processes every 0.1 s. A second measurement runs the
training loader alone (no model) to give its images/s against its process count.

    python bench/bench_data_scale.py --n 1000 3000 6000              # the table in docs/data.md
    python bench/bench_data_scale.py --coco128 --imgsz 320           # cached vs streamed training throughput
    python bench/bench_data_scale.py --dataset /tmp/d/data.yaml      # one default row on a dataset kept from before
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # the row's start: before torch is imported, as a trial worker's process starts

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

ASSETS = Path(os.environ.get("ORCHESTRATOR_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def pss_bytes(pid: int) -> int:
    """PSS of ``pid`` plus its children (the DataLoader's workers), from smaps_rollup."""
    total = 0
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


class PeakPss(threading.Thread):
    """The largest PSS seen while running (sampled; a spike shorter than the period can be missed)."""

    def __init__(self, period: float = 0.1):
        super().__init__(daemon=True)
        self.period, self.peak, self.stop = period, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, pss_bytes(os.getpid()))
            self.stop.wait(self.period)


def build_dataset(root: Path, n: int, n_val: int, seed: int = 0) -> Path:
    """N train and ``n_val`` val images of 640x480 with YOLO labels, and the data yaml."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            im = cv2.resize(
                rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC
            )
            rows = []
            for _ in range(min(int(rng.poisson(7)), 40)):
                c, (cx, cy), (w, h) = int(rng.integers(80)), rng.uniform(0.15, 0.85, 2), rng.uniform(0.03, 0.3, 2)
                x1, y1, x2, y2 = (
                    int((cx - w / 2) * 640),
                    int((cy - h / 2) * 480),
                    int((cx + w / 2) * 640),
                    int((cy + h / 2) * 480),
                )
                cv2.rectangle(im, (x1, y1), (x2, y2), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
                rows.append(f"{c} {cx:.5f} {cy:.5f} {w:.5f} {h:.5f}")
            cv2.imwrite(str(root / "images" / split / f"{i:06d}.jpg"), im, [cv2.IMWRITE_JPEG_QUALITY, 85])
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(rows))
    names = [f"c{i}" for i in range(80)]
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {names}\n")
    return root / "data.yaml"


def child(a: argparse.Namespace) -> dict:
    """One row: the trial's data path (val set, fine-tune steps, validation) under the given cache and workers."""
    sampler = PeakPss()
    sampler.start()
    import torch

    from orchestrator.yolo.checkpoint import load_checkpoint
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.image_cache import CacheSettings
    from orchestrator.yolo.train import VAL_BATCH, finetune
    from orchestrator.yolo.val import ValSet, val_stride, validate

    torch.set_num_threads(a.threads)
    cache = CacheSettings(a.cache, a.budget_gb)
    data = load_data_config(a.data)
    model = load_checkpoint(ASSETS / "yolov5n.pt").model
    vs = ValSet(data, a.imgsz, VAL_BATCH, stride=val_stride(model), cache=cache, workers=a.workers)
    first: list[float] = []
    speed: list[float] = []

    def on_batch(b) -> None:
        if not first:
            first.append(time.perf_counter() - T0)
        speed.append(b.images_per_s)

    t = time.perf_counter()
    ft = finetune(
        model, data, 1, imgsz=a.imgsz, batch=a.batch, workers=a.workers, cache=cache, max_batches=a.steps,
        val_set=vs, on_batch=on_batch,
    )  # fmt: skip
    train_s = ft.history[0].train_s
    v0 = time.perf_counter()
    validate(ft.model, vs)
    val_s = time.perf_counter() - v0
    sampler.stop.set()
    sampler.join()
    return {
        "peak_pss_gb": sampler.peak / 1e9, "first_step_s": first[0] if first else float("nan"),
        "train_img_s": a.steps * a.batch / train_s if a.steps else float("nan"), "val_s": val_s,
        "total_s": time.perf_counter() - t, "val_cached": len(vs.cached) == len(vs.plan),
    }  # fmt: skip


def loader_rate(a: argparse.Namespace) -> dict:
    """The training loader alone (mosaic, affine, HSV): images/s over ``--steps`` batches after the first."""
    import torch

    from orchestrator.yolo.augment import EpochBatchSampler, TrainDataset
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.hyp import get_hyp
    from orchestrator.yolo.image_cache import CacheSettings, TrainImages
    from orchestrator.yolo.train import train_loader

    ti = TrainImages(load_data_config(a.data), a.imgsz, cache=CacheSettings(a.cache, a.budget_gb))
    ds = TrainDataset(ti.image, ti.labels, a.imgsz, get_hyp("finetune"))
    sampler = EpochBatchSampler(len(ds), a.batch)
    sampler.set_epoch(0)
    it = iter(train_loader(ds, sampler, a.workers, torch.device("cpu")))
    next(it)
    steps = min(a.steps, len(sampler) - 1)
    t = time.perf_counter()
    for _ in range(steps):
        next(it)
    return {"loader_img_s": steps * a.batch / (time.perf_counter() - t)}


def row(data: Path, **kw) -> dict:
    args = [sys.executable, __file__, "--child", "--data", str(data)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"row {kw} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 3000, 6000])
    ap.add_argument("--val-images", type=int, default=200)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="fine-tune batches per row (default 3)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader processes to compare")
    ap.add_argument("--cached-up-to", type=int, default=3000, help="also run RAM-cache-everything rows up to this N")
    ap.add_argument("--coco128", action="store_true", help="coco128: cached vs streamed training throughput")
    ap.add_argument("--dataset", help="rows on this data yaml (e.g. one kept from an earlier run) instead of building")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--loader", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--budget-gb", type=float, default=2.0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        a.workers = a.workers[0]
        print(json.dumps(loader_rate(a) if a.loader else child(a)))
        return
    head = "| N | cache | loader procs | peak PSS GB | first step s | train img/s | val s | loader img/s |"
    print(head + "\n" + "|---" * 8 + "|")
    w = a.workers[-1]
    common = dict(imgsz=a.imgsz, batch=a.batch, steps=a.steps)
    if a.coco128:
        data = ASSETS / "coco128.yaml"
        for cache in ("auto", "none"):
            r = row(data, cache=cache, workers=w, **common)
            _print(128, cache, w, r, row(data, loader=True, cache=cache, workers=w, **common))
        return
    if a.dataset:
        n = len(load_data_config_only(a.dataset))
        _print(n, "auto", w, row(Path(a.dataset), cache="auto", budget_gb=2.0, workers=w, **common), {})
        return
    root = Path(tempfile.mkdtemp(prefix="data-scale-", dir="/tmp"))
    try:
        for n in a.n:
            data = build_dataset(root / f"n{n}", n, a.val_images)
            plans = [("auto", 2.0, w)] + [("ram", 1e6, w)] * (n <= a.cached_up_to)
            for cache, budget, workers in plans:
                r = row(data, cache=cache, budget_gb=budget, workers=workers, **common)
                _print(n, cache if budget < 1e5 else "ram (all)", workers, r, {})
            for workers in a.workers:
                lr = row(data, loader=True, cache="none", workers=workers, imgsz=a.imgsz, batch=a.batch, steps=8)
                _print(n, "none", workers, {}, lr)
            shutil.rmtree(root / f"n{n}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def load_data_config_only(path: str) -> tuple:
    """The training images a data yaml lists (without importing torch in the parent)."""
    from orchestrator.yolo.data import load_data_config

    return load_data_config(path).train


def _print(n: int, cache: str, workers: int, r: dict, lr: dict) -> None:
    def f(d: dict, k: str, fmt: str) -> str:
        return format(d[k], fmt) if k in d else ""

    cells = [f"{n:,}", cache, str(workers), f(r, "peak_pss_gb", ".2f"), f(r, "first_step_s", ".1f"),
             f(r, "train_img_s", ".2f"), f(r, "val_s", ".1f"), f(lr, "loader_img_s", ".1f")]  # fmt: skip
    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
