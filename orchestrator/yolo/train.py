"""Fine-tuning: ``finetune(model, data, epochs) -> FinetuneResult``, made for pretrained and pruned models.

SGD (nesterov) with the official parameter groups (decay on conv/linear weights only), gradient
accumulation to a nominal batch, optional warm-up, linear or cosine decay, an EMA of the weights
with the official ramp, validation of the EMA after every epoch, the best EMA kept.

Pruned models need nothing special. Unstructured masks from ``torch.nn.utils.prune`` stay in
place: the optimiser trains ``weight_orig`` and the forward pre-hook multiplies by the mask, so a
pruned weight is exactly zero in every step, and the EMA (a deep copy keeping the
re-parametrisation) averages ``weight_orig`` under the same mask. Channel-pruned models are just
models with other widths.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..errors import TrainingError
from .augment import EpochBatchSampler, TrainDataset, collate, worker_init
from .data import DataConfig, load_image, scan_labels
from .distill import distill_loss, teacher_maps
from .hyp import Hyp, get_hyp
from .loss import YoloLoss
from .masks import conv_sparsity as conv_sparsity  # one implementation; callers import it from here too
from .model import copy_model
from .val import ValResult, ValSet, val_stride, validate

VAL_BATCH = 32  # validation batch (rect batches): what `orchestrator val` and the official val.py use


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean per-image loss parts, last lr, training speed and the EMA's validation metrics."""

    epoch: int  # 1-based
    box: float
    obj: float
    cls: float
    lr: float
    images_per_s: float  # training only (forward, backward, step, data), not validation
    map50_95: float
    map50: float
    precision: float
    recall: float
    train_s: float
    val_s: float


@dataclass(frozen=True)
class BatchProgress:
    """Running state inside an epoch, for progress bars."""

    epoch: int  # 1-based
    batch: int  # 1-based
    batches: int
    box: float  # running means so far this epoch
    obj: float
    cls: float
    images_per_s: float


@dataclass(frozen=True)
class FinetuneResult:
    """The best EMA (eval mode, prune masks kept), per-epoch history, and the metrics of that model."""

    model: nn.Module
    history: tuple[EpochRecord, ...]
    best_epoch: int  # 0 when no epoch ran
    metrics: ValResult  # validation of ``model``
    hyp: Hyp
    seconds: float


class TrainImages:
    """Training images and labels, checked once, optionally decoded into RAM; reusable across fine-tunes.

    Memory with the cache is about ``images * imgsz * imgsz * 3 * 0.75`` bytes (long side ``imgsz``).
    """

    def __init__(self, data: DataConfig, imgsz: int, *, cache_images: bool = True, cache_dir: Path | None = None):
        found = scan_labels(data.train, data.nc, cache_dir)
        if not found.files:
            why = f": {found.problems[0]}" if found.problems else ""
            raise TrainingError(f"{data.file}: train: no usable training images ({len(data.train)} listed){why}")
        self.imgsz, self.files, self.labels, self.problems = imgsz, found.files, found.labels, found.problems
        self.cached: tuple[np.ndarray, ...] | None = None
        if cache_images:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self.cached = tuple(pool.map(self.load, range(len(self.files))))

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> np.ndarray:
        return load_image(self.files[i], self.imgsz, augment=True)[0]

    def image(self, i: int) -> np.ndarray:
        """BGR uint8, long side ``imgsz``."""
        return self.cached[i] if self.cached is not None else self.load(i)


class ModelEMA:
    """Exponential moving average of a model's state (weights and BN statistics), official ramp.

    ``decay * (1 - exp(-updates / tau))`` keeps early averages close to the live model. Prune masks
    are copied, never averaged, so the EMA zeroes exactly the weights the model zeroes.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.module = detached_copy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        live = model.state_dict()
        with torch.no_grad():
            for k, v in self.module.state_dict().items():
                if v.dtype.is_floating_point and not k.endswith("_mask"):
                    v.mul_(d).add_(live[k].detach(), alpha=1 - d)


# kept under its old name for callers of train.py
detached_copy = copy_model


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``decay``: conv/linear weights (``weight_orig`` when pruned); ``no_decay``: norm weights; ``bias``."""
    groups: dict[str, list[nn.Parameter]] = {"bias": [], "no_decay": [], "decay": []}
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if name in ("bias", "bias_orig"):
                groups["bias"].append(p)
            elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                groups["no_decay"].append(p)
            else:
                groups["decay"].append(p)
    return groups


def lr_factor(hyp: Hyp, epochs: int) -> Callable[[float], float]:
    """Epoch -> lr multiplier: linear or cosine from 1 to ``lrf``."""
    if hyp.cos_lr:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (hyp.lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - hyp.lrf) + hyp.lrf


def fitness(r: ValResult) -> float:
    """Model selection score (official weights): 0.1 mAP50 + 0.9 mAP50-95."""
    return 0.1 * r.map50 + 0.9 * r.map50_95


def finetune(
    model: nn.Module,
    data: DataConfig,
    epochs: int,
    *,
    imgsz: int = 640,
    batch: int = 16,
    hyp: Hyp | str = "finetune",
    lr0: float | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    workers: int | None = None,
    val_set: ValSet | None = None,
    train_images: TrainImages | None = None,
    cache_images: bool = True,
    amp: bool | None = None,
    progress: Callable[[EpochRecord], None] | None = None,
    on_batch: Callable[[BatchProgress], None] | None = None,
    teacher: nn.Module | None = None,
    distill: float = 1.0,
) -> FinetuneResult:
    """Fine-tune ``model`` (trained in place) and return the best EMA, validated each epoch on ``data.val``.

    ``epochs=0`` validates and returns the model as it is. ``val_set``/``train_images`` let a worker
    reuse decoded data across trials (they must match ``imgsz``). Never prints; ``progress`` gets each
    :class:`EpochRecord`, ``on_batch`` each :class:`BatchProgress`. Deterministic on CPU for a seed.
    With a ``teacher`` (the unpruned model), ``distill`` x :func:`.distill.distill_loss` per image is added.
    """
    t_start = time.perf_counter()
    hyp = get_hyp(hyp)
    if lr0 is not None:
        hyp = replace(hyp, lr0=lr0)
    if epochs < 0 or batch < 1:
        raise ValueError(f"epochs must be >= 0 and batch >= 1 (got epochs={epochs}, batch={batch})")
    device = torch.device(device)
    if val_set is None:
        val_set = ValSet(data, imgsz, VAL_BATCH, stride=val_stride(model))
    if epochs == 0:
        model = model.to(device).eval()
        res = validate(model, val_set, device=device)
        return FinetuneResult(model, (), 0, res, hyp, time.perf_counter() - t_start)

    if train_images is None:
        train_images = TrainImages(data, imgsz, cache_images=cache_images)
    elif train_images.imgsz != imgsz:
        raise ValueError(f"train_images were decoded for imgsz={train_images.imgsz}, not {imgsz}")
    dataset = TrainDataset(train_images.image, train_images.labels, imgsz, hyp, seed=seed)
    sampler = EpochBatchSampler(len(dataset), batch, seed=seed)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers, worker_init_fn=worker_init,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
    )  # fmt: skip

    model = model.to(device).float().train()
    for p in model.parameters():
        p.requires_grad_(True)
    accumulate = max(round(hyp.nbs / batch), 1)
    groups = parameter_groups(model)
    optimizer = torch.optim.SGD(groups["bias"], lr=hyp.lr0, momentum=hyp.momentum, nesterov=True)
    optimizer.add_param_group(
        {"params": groups["decay"], "weight_decay": hyp.weight_decay * batch * accumulate / hyp.nbs}
    )
    optimizer.add_param_group({"params": groups["no_decay"], "weight_decay": 0.0})
    lf = lr_factor(hyp, epochs)
    loss_fn = YoloLoss(model, hyp, imgsz)
    ema = ModelEMA(model, hyp.ema_decay, hyp.ema_tau)
    amp = device.type == "cuda" if amp is None else amp
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    nb = len(loader)
    nw = max(round(hyp.warmup_epochs * nb), hyp.warmup_min_iters) if hyp.warmup_epochs > 0 else hyp.warmup_min_iters
    last_step = -1
    history: list[EpochRecord] = []
    best: tuple[float, int, nn.Module, ValResult] | None = None
    params = [p for g in groups.values() for p in g]

    for epoch in range(epochs):
        model.train()
        if hyp.freeze_bn_stats:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for g in optimizer.param_groups:
            g["lr"] = hyp.lr0 * lf(epoch)
        sampler.set_epoch(epoch, mosaic=epoch < epochs - hyp.close_mosaic)
        sums = torch.zeros(3)
        seen, t0 = 0, time.perf_counter()
        for i, (imgs, targets) in enumerate(loader):
            ni = i + nb * epoch
            if ni <= nw and nw > 0:
                accumulate = max(1, round(float(np.interp(ni, [0, nw], [1, hyp.nbs / batch]))))
                for j, g in enumerate(optimizer.param_groups):
                    start = hyp.warmup_bias_lr if j == 0 else 0.0
                    g["lr"] = float(np.interp(ni, [0, nw], [start, hyp.lr0 * lf(epoch)]))
                    g["momentum"] = float(np.interp(ni, [0, nw], [hyp.warmup_momentum, hyp.momentum]))
            imgs = imgs.to(device, non_blocking=True).float() / 255
            with torch.autocast(device.type, enabled=amp):
                preds = model(imgs)
                out = loss_fn(preds, targets.to(device))
                total = out.total
                if teacher is not None:
                    total = total + distill * distill_loss(preds, teacher_maps(teacher, imgs)) * len(imgs)
            if not torch.isfinite(out.total):
                raise TrainingError(
                    f"loss became {float(out.total.detach())} at epoch {epoch + 1}, iteration {i + 1} of {nb} "
                    f"(box {out.box:.4g}, obj {out.obj:.4g}, cls {out.cls:.4g}); lower lr0 (now {hyp.lr0:g})"
                )
            scaler.scale(total).backward()
            if ni - last_step >= accumulate:
                scaler.unscale_(optimizer)
                if hyp.grad_clip > 0:
                    nn.utils.clip_grad_norm_(params, max_norm=hyp.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                ema.update(model)
                last_step = ni
            sums += out.parts.float().cpu() * len(imgs)
            seen += len(imgs)
            if on_batch is not None:
                m = (sums / seen).tolist()
                speed = seen / (time.perf_counter() - t0)
                on_batch(BatchProgress(epoch + 1, i + 1, nb, m[0], m[1], m[2], speed))
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = validate(ema.module, val_set, device=device)
        mean = (sums / max(seen, 1)).tolist()
        rec = EpochRecord(
            epoch + 1, mean[0], mean[1], mean[2], optimizer.param_groups[1]["lr"], seen / train_s,
            res.map50_95, res.map50, res.precision, res.recall, train_s, time.perf_counter() - t1,
        )  # fmt: skip
        history.append(rec)
        if best is None or fitness(res) > best[0]:
            best = (fitness(res), epoch + 1, detached_copy(ema.module), res)
        if progress is not None:
            progress(rec)

    model.eval()
    assert best is not None
    _, best_epoch, best_model, best_res = best
    return FinetuneResult(best_model.eval(), tuple(history), best_epoch, best_res, hyp, time.perf_counter() - t_start)
