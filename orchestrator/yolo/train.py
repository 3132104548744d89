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
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..errors import DataLost, TrainingError
from .augment import EpochBatchSampler, TrainBatch, TrainDataset, collate_counted, worker_init
from .data import DataConfig
from .distill import distill_loss, teacher_maps
from .heap import trim_heap
from .hyp import Hyp, get_hyp
from .image_cache import CacheSettings
from .image_cache import TrainImages as TrainImages  # its home was here: callers import it from train
from .loss import LossOutput, YoloLoss
from .masks import conv_sparsity as conv_sparsity  # one implementation; callers import it from here too
from .model import copy_model, recompute_bn_act
from .val import ValResult, ValSet, val_stride, validate

# Pixels per batch (batch x imgsz^2) from which a CPU fine-tune recomputes BN outputs in backward by default: the
# activations kept for backward are then most of its memory (2.7 GB for yolov5n at 640 x 16); below it they are
# small and the recomputation's ~5% would cost the quickstart (320 x 16) time for nothing.
RECOMPUTE_PIXELS = 8 * 640 * 640
VAL_BATCH = 32  # validation batch (rect batches): what `orchestrator val` and the official val.py use
# Training images that cannot be read mid-epoch (streamed from a disk that lost them) are skipped and counted;
# beyond this share of the epoch's images read so far (and more than one), the fine-tune stops with the reason.
MAX_UNREADABLE = 0.1


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
    unreadable: tuple[str, ...] = ()  # why each training image skipped this epoch could not be read

    @property
    def skipped_images(self) -> int:
        return len(self.unreadable)


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
    stopped: str = ""  # why the fine-tune ended before its last epoch (``stop`` said so); "" when it ran them all


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


@dataclass(frozen=True)
class TrainSettings:
    """How a fine-tune runs, apart from the model, the data and the epochs; the defaults suit a pruned yolov5n."""

    imgsz: int = 640
    batch: int = 16
    hyp: Hyp | str = "finetune"  # a preset name or a Hyp
    lr0: float | None = None  # replaces the preset's lr0: the one setting a study searches over
    device: str | torch.device = "cpu"
    seed: int = 0  # augmentation and batch order: the same seed trains the same weights on CPU
    workers: int | None = None  # loader processes; None: min(2, cpus)
    cache_images: bool = True  # False: never keep decoded images (when no TrainImages and no ``cache`` is given)
    cache: CacheSettings | None = None  # where decoded images live (None: ``auto`` within the default budget)
    max_batches: int | None = None  # batches per epoch at most: benchmarks and smoke runs, never a study
    amp: bool | None = None  # mixed precision; None: on CUDA only (CPU autocast is slower)
    distill: float = 1.0  # weight of the teacher's distillation loss, when a teacher is given
    # Keep only each conv's output for backward and recompute the frozen BN's (same gradients to the bit): 0.76 GB
    # less for yolov5n at 640 x 16 for ~5% more time per step. None: on a CPU from RECOMPUTE_PIXELS per batch.
    recompute_bn: bool | None = None


def finetune(
    model: nn.Module,
    data: DataConfig,
    epochs: int,
    settings: TrainSettings | None = None,
    *,
    val_set: ValSet | None = None,
    train_images: TrainImages | None = None,
    teacher: nn.Module | None = None,
    progress: Callable[[EpochRecord], None] | None = None,
    on_batch: Callable[[BatchProgress], None] | None = None,
    stop: Callable[[EpochRecord], str] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` (trained in place) and return the best EMA, validated each epoch on ``data.val``.

    ``epochs=0`` validates and returns the model as it is. ``val_set``/``train_images`` let a worker
    reuse decoded data across trials (they must match ``imgsz``). Never prints; ``progress`` gets each
    :class:`EpochRecord`, ``on_batch`` each :class:`BatchProgress`, ``stop`` each record too: a reason it
    returns ends the fine-tune there (the best EMA so far is returned). Deterministic on CPU for a seed.
    With a ``teacher`` (the unpruned model), ``distill`` x :func:`.distill.distill_loss` per image is added.
    ``options`` are :class:`TrainSettings` fields given one by one (``imgsz=320, batch=8``), on top of ``settings``.
    """
    t_start = time.perf_counter()
    s = replace(settings or TrainSettings(), **options)
    hyp = get_hyp(s.hyp)
    if s.lr0 is not None:
        hyp = replace(hyp, lr0=s.lr0)
    if epochs < 0 or s.batch < 1:
        raise ValueError(f"epochs must be >= 0 and batch >= 1 (got epochs={epochs}, batch={s.batch})")
    device = torch.device(s.device)
    if val_set is None:
        val_set = ValSet(data, s.imgsz, VAL_BATCH, stride=val_stride(model))
    if epochs == 0:
        model = model.to(device).eval()
        res = validate(model, val_set, device=device)
        return FinetuneResult(model, (), 0, res, hyp, time.perf_counter() - t_start)

    loop = _Loop.start(model, data, epochs, s, hyp, device, train_images, teacher, on_batch)
    history: list[EpochRecord] = []
    best: tuple[float, int, nn.Module, ValResult] | None = None
    stopped = ""
    for epoch in range(epochs):
        sums, seen, train_s, unreadable = loop.train_epoch(epoch)
        if device.type == "cpu":
            trim_heap()  # the step's freed activations: validation would grow beside them instead of into them
        t1 = time.perf_counter()
        res = validate(loop.ema.module, val_set, device=device)
        mean = (sums / max(seen, 1)).tolist()
        rec = EpochRecord(
            epoch + 1, mean[0], mean[1], mean[2], loop.optimizer.param_groups[1]["lr"], seen / train_s,
            res.map50_95, res.map50, res.precision, res.recall, train_s, time.perf_counter() - t1, unreadable,
        )  # fmt: skip
        history.append(rec)
        if best is None or fitness(res) > best[0]:
            best = (fitness(res), epoch + 1, detached_copy(loop.ema.module), res)
        if progress is not None:
            progress(rec)
        if stop is not None and (stopped := stop(rec)):
            break

    loop.model.eval()
    assert best is not None
    _, best_epoch, best_model, best_res = best
    seconds = time.perf_counter() - t_start
    return FinetuneResult(best_model.eval(), tuple(history), best_epoch, best_res, hyp, seconds, stopped)


def train_loader(dataset: TrainDataset, sampler: EpochBatchSampler, workers: int | None, device: torch.device):
    """The training DataLoader: ``workers`` processes (None: min(2, cores)) that stay up across epochs, so a
    streamed split is decoded in parallel with the step; pinned memory and a deeper prefetch feed a GPU."""
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    cuda = device.type == "cuda"
    extra = {"prefetch_factor": 4 if cuda else 2} if workers > 0 else {}
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_counted, num_workers=workers, worker_init_fn=worker_init,
        persistent_workers=workers > 0, pin_memory=cuda, **extra,
    )  # fmt: skip


def recompute_wanted(s: TrainSettings, device: torch.device) -> bool:
    """Whether BN outputs are recomputed in backward: as ``s.recompute_bn`` says, else on a CPU (on a GPU the
    activations are device memory, not the worker's) once a batch holds :data:`RECOMPUTE_PIXELS`."""
    if s.recompute_bn is not None:
        return s.recompute_bn
    return device.type == "cpu" and s.batch * s.imgsz * s.imgsz >= RECOMPUTE_PIXELS


def make_optimizer(
    groups: dict[str, list[nn.Parameter]], hyp: Hyp, batch: int, accumulate: int
) -> torch.optim.Optimizer:
    """Nesterov SGD over the official groups (0: biases, 1: decayed weights, 2: norm weights).

    Weight decay is scaled to the nominal batch (``hyp.nbs``) so that a small batch decays as much per image.
    """
    optimizer = torch.optim.SGD(groups["bias"], lr=hyp.lr0, momentum=hyp.momentum, nesterov=True)
    optimizer.add_param_group(
        {"params": groups["decay"], "weight_decay": hyp.weight_decay * batch * accumulate / hyp.nbs}
    )
    optimizer.add_param_group({"params": groups["no_decay"], "weight_decay": 0.0})
    return optimizer


def warmup_iterations(hyp: Hyp, batches: int) -> int:
    """Optimiser iterations of the warm-up: ``warmup_epochs`` of batches, never fewer than ``warmup_min_iters``."""
    if hyp.warmup_epochs > 0:
        return max(round(hyp.warmup_epochs * batches), hyp.warmup_min_iters)
    return hyp.warmup_min_iters


def _readable(
    batch: TrainBatch, unreadable: list[str], seen: int, epoch: int
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The batch's readable images and targets; its unreadable ones added to ``unreadable``, or too many of them
    in the epoch so far a :class:`DataLost` naming the first (a dataset folder gone is said once, by the folder)."""
    unreadable.extend(batch.unreadable)
    bad, met = len(unreadable), seen + len(batch.unreadable) + (0 if batch.images is None else len(batch.images))
    if bad > 1 and bad > MAX_UNREADABLE * met:
        raise DataLost(
            f"epoch {epoch + 1}: {bad} of the {met} training images read so far could not be read (more than "
            f"{MAX_UNREADABLE:.0%}); first: {unreadable[0]}"
        )
    return batch.images, batch.targets


@dataclass
class _Loop:
    """What one fine-tune carries from batch to batch: model, loader, optimiser, EMA and the step counters."""

    model: nn.Module
    hyp: Hyp
    device: torch.device
    batch: int
    epochs: int
    loader: DataLoader
    sampler: EpochBatchSampler
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    lf: Callable[[float], float]
    loss_fn: YoloLoss
    ema: ModelEMA
    amp: bool
    scaler: torch.amp.GradScaler
    teacher: nn.Module | None
    distill: float
    on_batch: Callable[[BatchProgress], None] | None
    accumulate: int  # batches per optimiser step (ramped up during the warm-up)
    warmup: int  # iterations of warm-up
    max_batches: int | None = None
    recompute_bn: bool = False  # see TrainSettings.recompute_bn
    last_step: int = -1  # iteration of the last optimiser step

    @classmethod
    def start(
        cls,
        model: nn.Module,
        data: DataConfig,
        epochs: int,
        s: TrainSettings,
        hyp: Hyp,
        device: torch.device,
        train_images: TrainImages | None,
        teacher: nn.Module | None,
        on_batch: Callable[[BatchProgress], None] | None,
    ) -> _Loop:
        if train_images is None:
            train_images = TrainImages(data, s.imgsz, cache_images=s.cache_images, cache=s.cache)
        elif train_images.imgsz != s.imgsz:
            raise ValueError(f"train_images were decoded for imgsz={train_images.imgsz}, not {s.imgsz}")
        dataset = TrainDataset(train_images.image, train_images.labels, s.imgsz, hyp, seed=s.seed)
        sampler = EpochBatchSampler(len(dataset), s.batch, seed=s.seed)
        loader = train_loader(dataset, sampler, s.workers, device)

        model = model.to(device).float().train()
        for p in model.parameters():
            p.requires_grad_(True)
        accumulate = max(round(hyp.nbs / s.batch), 1)
        groups = parameter_groups(model)
        optimizer = make_optimizer(groups, hyp, s.batch, accumulate)
        lf = lr_factor(hyp, epochs)
        loss_fn = YoloLoss(model, hyp, s.imgsz)
        ema = ModelEMA(model, hyp.ema_decay, hyp.ema_tau)
        amp = device.type == "cuda" if s.amp is None else s.amp
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        params = [p for g in groups.values() for p in g]
        return cls(
            model, hyp, device, s.batch, epochs, loader, sampler, optimizer, params, lf, loss_fn, ema, amp, scaler,
            teacher, s.distill, on_batch, accumulate, warmup_iterations(hyp, len(loader)), s.max_batches,
            recompute_wanted(s, device),
        )  # fmt: skip

    def train_epoch(self, epoch: int) -> tuple[torch.Tensor, int, float, tuple[str, ...]]:
        """One pass over the training images: (summed loss parts x images, images seen, seconds, why each image
        skipped could not be read). Stops with :class:`DataLost` when more than :data:`MAX_UNREADABLE` of the
        images read so far (and more than one) could not be."""
        hyp, model, nb = self.hyp, self.model, len(self.loader)
        model.train()
        if hyp.freeze_bn_stats:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for g in self.optimizer.param_groups:
            g["lr"] = hyp.lr0 * self.lf(epoch)
        self.sampler.set_epoch(epoch, mosaic=epoch < self.epochs - hyp.close_mosaic)
        sums = torch.zeros(3)
        seen, t0, unreadable = 0, time.perf_counter(), []
        with recompute_bn_act(model) if self.recompute_bn else nullcontext():
            for i, batch in enumerate(self.loader):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                imgs, targets = _readable(batch, unreadable, seen, epoch)
                if imgs is None:
                    continue
                ni = i + nb * epoch
                if ni <= self.warmup and self.warmup > 0:
                    self.warm_up(ni, epoch)
                imgs = imgs.to(self.device, non_blocking=True).float() / 255
                out = self.backward(imgs, targets, epoch, i, nb)
                if ni - self.last_step >= self.accumulate:
                    self.step(ni)
                sums += out.parts.float().cpu() * len(imgs)
                seen += len(imgs)
                if self.on_batch is not None:
                    m = (sums / seen).tolist()
                    speed = seen / (time.perf_counter() - t0)
                    self.on_batch(BatchProgress(epoch + 1, i + 1, nb, m[0], m[1], m[2], speed))
        if unreadable and not seen:
            raise DataLost(f"epoch {epoch + 1}: no training image could be read; first: {unreadable[0]}")
        return sums, seen, time.perf_counter() - t0, tuple(unreadable)

    def warm_up(self, ni: int, epoch: int) -> None:
        """Ramp accumulation, learning rates (biases from ``warmup_bias_lr`` down) and momentum over the warm-up."""
        hyp, nw = self.hyp, self.warmup
        self.accumulate = max(1, round(float(np.interp(ni, [0, nw], [1, hyp.nbs / self.batch]))))
        for j, g in enumerate(self.optimizer.param_groups):
            start = hyp.warmup_bias_lr if j == 0 else 0.0
            g["lr"] = float(np.interp(ni, [0, nw], [start, hyp.lr0 * self.lf(epoch)]))
            g["momentum"] = float(np.interp(ni, [0, nw], [hyp.warmup_momentum, hyp.momentum]))

    def backward(self, imgs: torch.Tensor, targets: torch.Tensor, epoch: int, i: int, nb: int) -> LossOutput:
        """Loss of one batch (plus distillation), back-propagated; a non-finite loss stops the fine-tune."""
        with torch.autocast(self.device.type, enabled=self.amp):
            preds = self.model(imgs)
            out = self.loss_fn(preds, targets.to(self.device))
            total = out.total
            if self.teacher is not None:
                total = total + self.distill * distill_loss(preds, teacher_maps(self.teacher, imgs)) * len(imgs)
        if not torch.isfinite(out.total):
            raise TrainingError(
                f"loss became {float(out.total.detach())} at epoch {epoch + 1}, iteration {i + 1} of {nb} "
                f"(box {out.box:.4g}, obj {out.obj:.4g}, cls {out.cls:.4g}); lower lr0 (now {self.hyp.lr0:g})"
            )
        self.scaler.scale(total).backward()
        return out

    def step(self, ni: int) -> None:
        """One optimiser step over the accumulated gradients (clipped when ``grad_clip``), then the EMA."""
        self.scaler.unscale_(self.optimizer)
        if self.hyp.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, max_norm=self.hyp.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        self.last_step = ni
