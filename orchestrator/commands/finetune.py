"""``orchestrator finetune``: fine-tune a checkpoint on a data yaml, save the best EMA (progress bar, table or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import OrchestratorError
from ..yolo.hyp import PRESETS  # plain dataclasses: the command list stays importable without torch
from .arg_checks import check_imgsz, check_out
from .cache_arg import add_cache_args, cache_settings


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a YOLOv5 checkpoint (pruned or not) and save the best EMA",
        description="Fine-tune a YOLOv5 checkpoint on the train split of a data yaml, validating the EMA on the val "
        "split after every epoch; the best EMA is saved. Unstructured prune masks recorded in the checkpoint (every "
        "file `prune`, `finetune` or a trial writes records them) stay in force: each pruned weight is exactly zero "
        "in the saved file, which records the masks again. Our layout is the default (float32, loads with "
        "torch.load(weights_only=True), no loss of precision from one fine-tune to the next); --official writes the "
        "fp16 layout official val.py/detect.py load, as `prune --official` does.",
    )
    p.add_argument(
        "--weights", required=True, help="checkpoint: a path, a name in $ORCHESTRATOR_ASSETS, an official name"
    )
    p.add_argument(
        "--data", required=True, help="YOLOv5 data yaml (path, train, val, names): a path or a name (coco128.yaml)"
    )
    p.add_argument("--epochs", type=int, required=True, help="training epochs (0: validate only)")
    p.add_argument("--imgsz", type=int, default=640, help="training and validation image size (default 640)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--lr0", type=float, default=None, help="initial learning rate (default: the preset's)")
    p.add_argument("--preset", choices=PRESETS, default="finetune", help="hyperparameters (default finetune)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument(
        "--distill", metavar="TEACHER", default=None, help="distil from this (unpruned) model's Detect outputs"
    )
    p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation loss (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default: min(2, cores))")
    add_cache_args(p)
    p.add_argument("--out", required=True, help="where to write the fine-tuned checkpoint (.pt)")
    p.add_argument("--official", action="store_true", help="write the official YOLOv5 layout (fp16 pickled module)")
    p.add_argument("--yes", action="store_true", help="allow downloading a large dataset (COCO: ~20 GB)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    return p


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    cache = cache_settings(args)
    # Heavy imports here, not at module top: every command module is imported to build the parser.

    from ..assets import resolve_data, resolve_weights
    from ..study.checks import scan_dataset
    from ..yolo.checkpoint import load_checkpoint, save_checkpoint
    from ..yolo.data import load_data_config
    from ..yolo.masks import attach_masks, conv_sparsity
    from ..yolo.train import VAL_BATCH, TrainSettings, finetune
    from ..yolo.val import ValSet, val_stride
    from .device_arg import parse_device

    device = parse_device(args.device)
    out = Path(args.out)
    weights = resolve_weights(args.weights)
    cfg = load_data_config(resolve_data(args.data, allow_large=args.yes), need=("train", "val"))
    ck = load_checkpoint(weights)
    model = attach_masks(ck.model, ck.masks)
    teacher = None
    if args.distill:
        if not args.distill_weight > 0:
            raise OrchestratorError(f"--distill-weight: expected > 0, got {args.distill_weight}")
        teacher = load_checkpoint(resolve_weights(args.distill)).model.to(device).float().eval()
        if teacher.nc != model.nc:
            raise OrchestratorError(f"--distill: the teacher predicts {teacher.nc} classes, the model {model.nc}")
    if model.nc != cfg.nc:
        raise OrchestratorError(f"{weights}: the model predicts {model.nc} classes but {cfg.file} has nc={cfg.nc}")
    # both splits through check's own scan: a class id outside nc refused (it silently dropped the image), the
    # images to be skipped said, as `check` and `run` do
    for warning in scan_dataset(cfg, model.nc):
        print(f"warning: {warning}", file=sys.stderr)
    stride = val_stride(model)
    if args.imgsz % stride:
        raise OrchestratorError(f"--imgsz: must be a multiple of the model stride {stride}, got {args.imgsz}")

    with _EpochBars(args.epochs) as bars:
        settings = TrainSettings(
            imgsz=args.imgsz, batch=args.batch, hyp=args.preset, lr0=args.lr0, device=device, seed=args.seed,
            workers=args.workers, distill=args.distill_weight, cache=cache,
        )  # fmt: skip
        val_set = ValSet(cfg, args.imgsz, VAL_BATCH, stride=stride, cache=cache, workers=settings.workers or 0)
        result = finetune(
            model, cfg, args.epochs, settings, val_set=val_set, teacher=teacher, progress=bars.epoch_done,
            on_batch=bars.batch,
        )  # fmt: skip
    meta = {
        "finetune": {
            "data": str(cfg.file), "epochs": args.epochs, "best_epoch": result.best_epoch, "imgsz": args.imgsz,
            "batch": args.batch, "preset": args.preset, "lr0": result.hyp.lr0, "seed": args.seed,
            "map50_95": result.metrics.map50_95, "map50": result.metrics.map50, "source": str(weights),
            "distill": args.distill, "distill_weight": args.distill_weight if args.distill else None,
        }
    }  # fmt: skip
    if args.official:
        from ..yolo.official_layout import save_official

        save_official(result.model, out, epoch=result.best_epoch)
    else:
        save_checkpoint(result.model, out, epoch=result.best_epoch, meta=meta)
    r, sparsity = result.metrics, conv_sparsity(result.model)
    if args.json:
        print(
            json.dumps(
                {
                    "weights": str(weights), "data": str(cfg.file), "out": str(out),
                    "layout": "official" if args.official else "orchestrator", "epochs": args.epochs,
                    "best_epoch": result.best_epoch, "imgsz": args.imgsz, "batch": args.batch, "preset": args.preset,
                    "lr0": result.hyp.lr0, "device": str(device), "seed": args.seed,
                    "map50_95": r.map50_95, "map50": r.map50, "precision": r.precision, "recall": r.recall,
                    "conv_sparsity": sparsity, "masked_convs": len(ck.masks), "seconds": result.seconds,
                    "history": [rec.__dict__ for rec in result.history],
                }
            )
        )  # fmt: skip
    else:
        _print_table(result, out, sparsity)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    """Every flag checked before the work: a bad one must not cost a model load or a fine-tune."""
    if args.epochs < 0:
        raise OrchestratorError(f"--epochs: expected >= 0, got {args.epochs}")
    if args.imgsz < 32 or args.imgsz % 32:
        raise OrchestratorError(f"--imgsz: expected a positive multiple of 32, got {args.imgsz}")
    check_imgsz(args.imgsz)
    check_out(args.out)  # before the work: an unwritable --out must not cost a fine-tune
    if args.batch < 1:
        raise OrchestratorError(f"--batch: expected >= 1, got {args.batch}")
    if args.lr0 is not None and not args.lr0 > 0:
        raise OrchestratorError(f"--lr0: expected > 0, got {args.lr0}")
    if args.workers is not None and args.workers < 0:
        raise OrchestratorError(f"--workers: expected >= 0, got {args.workers}")


class _EpochBars:
    """One rich progress bar per epoch on stderr: batches, running loss parts (box/obj/cls), images/s, then mAP."""

    def __init__(self, epochs: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/" + str(epochs)),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=epochs == 0,
        )
        self.tasks: dict[int, int] = {}

    def __enter__(self) -> _EpochBars:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def batch(self, b) -> None:
        if b.epoch not in self.tasks:
            self.tasks[b.epoch] = self.progress.add_task("", total=b.batches, epoch=b.epoch, info="")
        info = f"loss {b.box:.3f}/{b.obj:.3f}/{b.cls:.3f} {b.images_per_s:.1f} img/s"
        self.progress.update(self.tasks[b.epoch], completed=b.batch, info=info)

    def epoch_done(self, e) -> None:
        info = f"loss {e.box:.3f}/{e.obj:.3f}/{e.cls:.3f} {e.images_per_s:.1f} img/s mAP {e.map50_95:.4f}"
        if e.epoch in self.tasks:
            self.progress.update(self.tasks[e.epoch], info=info)
        if e.unreadable:  # fewer than the share that stops the fine-tune: counted, said once per epoch
            self.progress.console.print(
                f"warning: epoch {e.epoch}: {len(e.unreadable)} training images could not be read and were "
                f"skipped; first: {e.unreadable[0]}",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip


def _print_table(result, out: Path, sparsity: float) -> None:
    from rich.table import Table

    from .console import stdout_console

    console = stdout_console()
    t = Table(title=f"fine-tuned -> {out} (best epoch {result.best_epoch})")
    for col in ("Epoch", "box", "obj", "cls", "img/s", "P", "R", "mAP50", "mAP50-95"):
        t.add_column(col, justify="right")
    for e in result.history:
        t.add_row(
            str(e.epoch), f"{e.box:.4f}", f"{e.obj:.4f}", f"{e.cls:.4f}", f"{e.images_per_s:.1f}",
            f"{e.precision:.3f}", f"{e.recall:.3f}", f"{e.map50:.4f}", f"{e.map50_95:.4f}",
        )  # fmt: skip
    r = result.metrics
    t.add_row(
        "best", "", "", "", "", f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.map50:.4f}", f"{r.map50_95:.4f}",
        style="bold",
    )  # fmt: skip
    console.print(t)
    console.print(f"conv weight sparsity {sparsity:.4f}; {r.images} val images, {r.instances} instances")
