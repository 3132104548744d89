"""What a real-trial worker loads once and reuses for every trial of a workload: the :class:`WorkerContext`.

The eager fields (baseline model, data, device, hyp, val set) are what every trial needs; the lazy ones
(one-shot calibration, ONNX Runtime baseline session, int8 calibration images, train images, test set,
sensitivity scan) are built on a trial's first use, because most studies never need some of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import OrchestratorError
from .contract import WorkerCache, Workload

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from ..prune.oneshot import OneShot
    from ..yolo.data import DataConfig
    from ..yolo.hyp import Hyp
    from ..yolo.train import TrainImages
    from ..yolo.val import ValSet

_UNSET: Any = object()  # a lazy field not built yet (None is a value: "no test split")


@dataclass
class WorkerContext:
    """The unpruned model and the study's data as a worker holds them; never changed by a trial."""

    workload: Workload
    model: nn.Module  # the unpruned baseline: copied or cut by each trial, the teacher of distillation
    data: DataConfig
    device: torch.device
    hyp: Hyp  # the preset with the study's overrides
    val_set: ValSet
    masks: dict[str, Any]  # prune masks the base checkpoint records (empty for an unpruned one)
    sensitivity: dict[str, Any] | None = None  # the last budget cut's scan, reused for the next target
    speed_scan: dict[str, Any] = field(default_factory=dict)  # the speed-up allocations' scan (speedup_cut memo)
    _oneshot: Any = field(default=_UNSET, repr=False)
    _ort_baseline: Any = field(default=_UNSET, repr=False)
    _calibration: Any = field(default=_UNSET, repr=False)
    _train_images: Any = field(default=_UNSET, repr=False)
    _test_set: Any = field(default=_UNSET, repr=False)

    @classmethod
    def of(cls, w: Workload, cache: WorkerCache) -> WorkerContext:
        """The worker's context for ``w``: loaded on its first trial, the same object afterwards."""
        items = cache.for_workload(w)
        if "context" not in items:
            items["context"] = cls.load(w)
        return items["context"]

    @classmethod
    def load(cls, w: Workload) -> WorkerContext:
        from pathlib import Path

        from ..assets import local_ref, resolve_data, resolve_weights
        from ..yolo.checkpoint import load_checkpoint
        from ..yolo.data import load_data_config
        from ..yolo.device import resolve_device
        from ..yolo.hyp import get_hyp
        from ..yolo.train import VAL_BATCH
        from ..yolo.val import ValSet, val_stride

        base = Path(w.base_dir)
        device = resolve_device(w.device)
        weights = resolve_weights(local_ref(w.model, base), progress=False)
        data = load_data_config(resolve_data(local_ref(w.data, base), progress=False))
        ck = load_checkpoint(weights)
        model = ck.model.eval()
        if model.nc != data.nc:
            raise OrchestratorError(
                f"{weights}: the model predicts {model.nc} classes but {data.file} has nc={data.nc}"
            )
        stride = val_stride(model)
        hyp = get_hyp(w.finetune.hyp)
        if w.finetune.overrides:
            hyp = replace(hyp, **w.finetune.overrides)
        from ..yolo.image_cache import CacheSettings

        cache = CacheSettings(w.cache.mode, w.cache.budget_gb) if w.cache is not None else CacheSettings()
        workers = loader_workers(w.threads, device.type == "cuda")
        val_set = ValSet(data, w.imgsz, VAL_BATCH, stride=stride, cache=cache, workers=workers)
        return cls(w, model, data, device, hyp, val_set, ck.masks)

    def built(self) -> set[str]:
        """The lazy fields built so far (``oneshot``, ``ort_baseline``, ...): what this worker has paid for."""
        names = ("oneshot", "ort_baseline", "calibration", "train_images", "test_set")
        return {n for n in names if getattr(self, f"_{n}") is not _UNSET}

    def oneshot(self) -> OneShot:
        """The unpruned model with its calibration images (train split) and channel statistics."""
        if self._oneshot is _UNSET:
            from ..prune.calibration import calibration_set
            from ..prune.oneshot import OneShot

            w = self.workload
            self._oneshot = OneShot(
                self.model, calibration_set(self.data, w.imgsz, w.pruning.calib_images, seed=w.seed)
            )
        return self._oneshot

    def ort_baseline(self) -> Any:
        """The unpruned model's ONNX Runtime session at the study's base size (every trial is timed against it,
        whatever its own size)."""
        if self._ort_baseline is _UNSET:
            from ..deploy.export import onnx_bytes
            from ..deploy.ort_runtime import open_session

            onnx = onnx_bytes(self.model, imgsz=self.workload.speed_imgsz)
            self._ort_baseline = open_session(onnx, device=self.device, threads=self.ort_threads)
        return self._ort_baseline

    @property
    def ort_threads(self) -> int | None:
        """ONNX Runtime's thread count: the worker's on CPU; on GPU its own default."""
        return self.workload.threads if self.device.type == "cpu" else None

    def calibration(self, images: int) -> Any:
        """Train images letterboxed for int8 calibration."""
        if self._calibration is _UNSET:
            from ..deploy.quantize import calibration_images

            self._calibration = calibration_images(self.data.train, self.workload.imgsz, images)
        return self._calibration

    def train_images(self) -> TrainImages:
        """The training split, decoded once for every fine-tune."""
        if self._train_images is _UNSET:
            from ..yolo.train import TrainImages

            # One budget per worker: what the val set holds in RAM is not there for the train split.
            left = max(0.0, self.cache_settings.budget_gb - self.val_set.cache_info()["val_cache_ram_gb"])
            cache = replace(self.cache_settings, budget_gb=left)
            self._train_images = TrainImages(self.data, self.workload.imgsz, cache=cache)
        return self._train_images

    @property
    def cache_settings(self) -> Any:
        """The study's ``cache:`` as a ``yolo.image_cache.CacheSettings`` (auto, 2 GB without one)."""
        from ..yolo.image_cache import CacheSettings

        c = self.workload.cache
        return CacheSettings(c.mode, c.budget_gb) if c is not None else CacheSettings()

    def cache_metrics(self) -> dict[str, float]:
        """What the trial logs about its images: the budget, the RAM held and the shares read from disk."""
        figures = dict(self.val_set.cache_info())
        if self._train_images is not _UNSET:
            store = self._train_images.store
            figures.update(store.describe(), cache_on_disk=float(store.mode == "disk"))
        figures["cache_budget_gb"] = float(self.cache_settings.budget_gb)  # the study's, not the train split's share
        return figures

    def test_set(self, stride: int, files: Callable[[], tuple]) -> ValSet | None:
        """The held-out split (``files()``, asked once) as a ValSet; None without one."""
        if self._test_set is _UNSET:
            from ..yolo.labels import scan_labels
            from ..yolo.train import VAL_BATCH
            from ..yolo.val import ValSet

            found = files()
            self._test_set = None
            if found:
                images = scan_labels(found, self.data.nc)
                self._test_set = ValSet(
                    images, self.workload.imgsz, VAL_BATCH, stride=stride, nc=self.data.nc, names=self.data.names
                )
        return self._test_set

    def device_name(self) -> str:
        import torch

        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        import platform

        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def loader_workers(threads: int, gpu: bool = False) -> int:
    """Loader processes from the trial's CPUs (``cpus_per_trial``): none for one CPU.

    On a GPU the main process only feeds the device, so every other CPU decodes and augments; on a CPU the
    model's torch threads need the cores too, so a quarter of them (at least two, at most all but one) load.
    """
    if threads <= 1:
        return 0
    return threads - 1 if gpu else min(threads - 1, max(2, threads // 4))
