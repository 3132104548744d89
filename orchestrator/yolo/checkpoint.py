"""Read official YOLOv5 ``.pt`` files and our own, without the YOLOv5 repo and without running code.

Official checkpoints pickle whole modules (``models.yolo.Model`` made of ``models.common.*``). We open
them with an allow-list unpickler: official classes become inert stand-ins from which we take the
yaml, the class names and the state dict, then rebuild our own :class:`DetectionModel`. Any global
outside the allow-list (``os.system``, ``builtins.eval``...) is refused before it can be called.
"""

from __future__ import annotations

import collections
import datetime as _dt
import pickle
import types
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .masks import MASKS_KEY, apply_zeros, check_masks, model_masks, pack_masks, unpack_masks
from .model import DetectionModel, adapt_to_state_dict, stored_bottlenecks
from .yaml_check import LayerTableError, check_against_state, check_layer_table

FORMAT = "orchestrator-yolov5/1"

# Official YOLOv5 classes we understand. They unpickle into inert stand-ins (see _stand_in).
OFFICIAL_CLASSES = {
    "models.yolo": ["Model", "DetectionModel", "Detect"],
    "models.common": ["Conv", "DWConv", "Bottleneck", "C3", "SPP", "SPPF", "Focus", "Concat"],
}
# the PyPI package (`pip install yolov5`) pickles the same classes under its own package name
OFFICIAL_CLASSES.update({f"yolov5.{mod}": names for mod, names in list(OFFICIAL_CLASSES.items())})
_TORCH_NN = {
    "torch.nn.modules.conv": ["Conv2d"],
    "torch.nn.modules.batchnorm": ["BatchNorm2d"],
    "torch.nn.modules.activation": ["SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Sigmoid"],
    "torch.nn.modules.linear": ["Identity"],
    "torch.nn.modules.pooling": ["MaxPool2d"],
    "torch.nn.modules.upsampling": ["Upsample"],
    "torch.nn.modules.container": ["Sequential", "ModuleList", "ModuleDict"],
}
# Plain data and tensor rebuilders: constructing these runs no user-controlled code.
_DATA = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): getattr(torch._utils, "_rebuild_parameter_with_state", None),
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("pathlib", "PosixPath"): Path,
    ("pathlib", "WindowsPath"): Path,
    ("pathlib", "Path"): Path,
}
for _dt_name in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
    _DATA[("torch", _dt_name)] = getattr(torch, _dt_name)


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    """numpy scalars/arrays appear in official checkpoints (best_fitness); rebuilding them is inert."""
    import numpy as np

    out: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = np.core.multiarray.scalar if hasattr(np, "core") else None
        out[(mod, "_reconstruct")] = np.core.multiarray._reconstruct if hasattr(np, "core") else None
    for name in ("Float64DType", "Float32DType", "Int64DType"):
        if hasattr(np.dtypes, name):
            out[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return {k: v for k, v in out.items() if v is not None}


class _StandIn(nn.Module):
    """Base of the inert classes official modules unpickle into; holds their attributes and nothing else."""

    official_name = ""

    def forward(self, *args, **kwargs):  # pragma: no cover - never called
        raise RuntimeError(f"{self.official_name} stand-in is not executable")


_STAND_INS: dict[tuple[str, str], type] = {
    (mod, name): type(name, (_StandIn,), {"official_name": f"{mod}.{name}"})
    for mod, names in OFFICIAL_CLASSES.items()
    for name in names
}


def _allowed_global(module: str, name: str) -> Any:
    if (module, name) in _STAND_INS:
        return _STAND_INS[(module, name)]
    if name in _TORCH_NN.get(module, ()):
        return getattr(torch.nn, name)
    if (module, name) in _DATA and _DATA[(module, name)] is not None:
        return _DATA[(module, name)]
    if module.startswith("numpy"):
        obj = _numpy_allowed().get((module, name))
        if obj is not None:
            return obj
    return None


class _RefusedGlobal(CheckpointError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_global(module, name)
        if obj is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return obj


def _safe_load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through the allow-list: torch calls ``pickle_module.load`` on some paths."""
    return _SafeUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) subclasses our Unpickler and keeps our find_class for all but storages.
# ``load`` is the allow-list too, so no torch code path can reach the plain unpickler through us.
_safe_pickle = types.SimpleNamespace(Unpickler=_SafeUnpickler, load=_safe_load, __name__="orchestrator_safe_pickle")

_ZIP_MAGIC = b"PK\x03\x04"  # torch.load takes its zip path only when the file STARTS with this
# A torch.save archive stores its records uncompressed: what it holds is about what it weighs on disk.
# Anything that inflates much beyond that is a zip bomb, not a checkpoint.
_MAX_INFLATION = 2.0
_INFLATION_SLACK = 16 << 20


def _check_archive(path: Path) -> None:
    """Refuse, from the bytes alone and before any unpickling, what torch.load would not read safely.

    torch.load decides by the first four bytes: without the zip magic it falls back to its legacy
    reader (tar or raw pickle), which ``zipfile.is_zipfile`` cannot rule out (it looks at the END of a
    file, so a pickle followed by a zip passes). A TorchScript archive is handed to ``torch.jit.load``,
    which runs code (``__setstate__``) from the file. Entries that inflate far beyond the file's size
    would exhaust memory before the allow-list ever sees a global. Damaged bytes fail the CRC check.
    """
    with path.open("rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (expected a zip archive written by torch.save)")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            size = path.stat().st_size
            inflated = sum(i.file_size for i in infos)
            if inflated > _MAX_INFLATION * size + _INFLATION_SLACK:
                raise CheckpointError(
                    f"{path}: refused to load: its records inflate to {inflated / 2**20:.0f} MiB from "
                    f"{size / 2**20:.1f} MiB on disk (torch.save stores records uncompressed)"
                )
            bad = z.testzip()
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({e})") from None
    except (OSError, EOFError, zlib.error, NotImplementedError) as e:  # damaged or exotic records
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: record {bad} fails its CRC check (truncated or corrupt?)")
    try:  # torch's own reader decides TorchScript-ness; ask it, not our zip parser
        records = torch._C.PyTorchFileReader(str(path)).get_all_records()
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if any(r == "constants.pkl" or r.startswith("code/") for r in records):
        raise CheckpointError(
            f"{path}: refused to load: a TorchScript archive (torch.jit.save), not a YOLOv5 checkpoint "
            "(opening it runs code stored in the file)"
        )


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: our model in float32 eval mode plus what the file said about itself."""

    model: DetectionModel
    path: Path
    layout: str  # "official" (pickled YOLOv5 modules) or "orchestrator" (yaml + state dict)
    epoch: int = -1
    date: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # conv name -> bool keep-mask of the unstructured cuts the file records (see yolo/masks.py); the model
    # itself carries no hooks: a trainer puts them back with masks.attach_masks
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    _check_archive(path)
    try:
        return torch.load(path, map_location="cpu", pickle_module=_safe_pickle, weights_only=False)
    except _RefusedGlobal as e:
        raise CheckpointError(
            f"{path}: refused to load: the pickle references {e}, which is not on the allow-list "
            "of YOLOv5 checkpoint contents (opening it could run code)"
        ) from None
    except Exception as e:  # corrupt archives and bad pickles come in many types
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None


def _official_state(stand_in: nn.Module) -> dict[str, torch.Tensor]:
    state = stand_in.state_dict()
    # YOLOv5 < 6.0 kept anchor_grid as a buffer; it is derived from anchors and stride.
    return {k: v for k, v in state.items() if not k.endswith("anchor_grid")}


def _copy_layer_settings(dst: nn.Module, src: nn.Module) -> None:
    """Carry BN eps/momentum and activation choices over from the file (a yaml rebuild would reset them)."""
    src_modules = dict(src.named_modules())
    for name, m in list(dst.named_modules()):
        s = src_modules.get(name)
        if s is None:
            continue
        if isinstance(m, nn.BatchNorm2d) and isinstance(s, nn.BatchNorm2d):
            m.eps, m.momentum = s.eps, s.momentum
        if name.endswith(".act") and isinstance(s, nn.Module) and not isinstance(s, _StandIn):
            parent, _, leaf = name.rpartition(".")
            if type(s) is not type(m):
                setattr(dst.get_submodule(parent), leaf, s)


def _from_official(obj: dict[str, Any], path: Path) -> Checkpoint:
    net = obj.get("ema") or obj.get("model")
    if not isinstance(net, _StandIn) or not hasattr(net, "yaml"):
        raise CheckpointError(f"{path}: not a YOLOv5 detection checkpoint (no 'model' with a yaml layer table)")
    cfg = dict(net.yaml)
    names = net.names if hasattr(net, "names") else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    state = _official_state(net)
    model = _build(cfg, state, names, path)
    _copy_layer_settings(model, net)
    meta = {k: v for k, v in obj.items() if k in ("opt", "best_fitness", "updates", "git", "orchestrator_imgsz")}
    epoch = int(obj.get("epoch", -1) or -1)
    return Checkpoint(model, path, "official", epoch, obj.get("date"), meta, _recorded_masks(obj, model, path))


def _check_tensor_bytes(state: dict[str, Any], path: Path) -> None:
    """Refuse tensors that claim more elements than their storage holds (stride-0 expansions).

    A real checkpoint never has one; a crafted file uses them to make a few stored bytes become
    gigabytes once copied to float or used as the shape of a rebuilt conv.
    """
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(
                f"{path}: not a YOLOv5 checkpoint (state entry {k} is {type(v).__name__}, not a tensor)"
            )
        need, have = v.numel() * v.element_size(), v.untyped_storage().nbytes()
        if need > have:
            raise CheckpointError(
                f"{path}: refused to load: tensor {k} claims {need:,} bytes from a {have:,}-byte storage "
                "(a crafted file inflating in memory)"
            )


def _build(cfg: dict, state: dict[str, torch.Tensor], names: list[str] | None, path: Path) -> DetectionModel:
    _check_tensor_bytes(state, path)
    try:  # bounded and matched against the tensors on the meta device: nothing real is built before this passes
        check_layer_table(cfg)
        check_against_state(cfg, state)
    except LayerTableError as e:
        raise CheckpointError(f"{path}: refused to load: {e}") from None
    try:
        model = DetectionModel(cfg, names=names, bottlenecks=stored_bottlenecks(cfg, state))
        adapt_to_state_dict(model, state)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model's layer table ({first})") from None
    return model.float().eval()


def _from_ours(obj: dict[str, Any], path: Path) -> Checkpoint:
    model = _build(obj["yaml"], obj["state_dict"], obj.get("names"), path)
    meta = dict(obj.get("meta", {}))
    masks = _recorded_masks(obj, model, path)
    return Checkpoint(model, path, "orchestrator", int(obj.get("epoch", -1)), obj.get("date"), meta, masks)


def _recorded_masks(obj: dict[str, Any], model: DetectionModel, path: Path) -> dict[str, torch.Tensor]:
    """The file's prune masks, checked against the model; masked-out weights are made exactly zero."""
    if obj.get(MASKS_KEY) is None:
        return {}
    masks = unpack_masks(obj[MASKS_KEY], str(path))
    check_masks(model, masks, str(path))
    apply_zeros(model, masks)
    return masks


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Open an official YOLOv5 ``.pt`` or one of ours; the model comes back float32 in eval mode."""
    path = Path(path)
    obj = _read(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_ours(obj, path)
    if isinstance(obj, dict) and ("model" in obj or "ema" in obj):
        return _from_official(obj, path)
    raise CheckpointError(f"{path}: not a YOLOv5 checkpoint (expected a dict with 'model')")


def load_model(path: str | Path) -> DetectionModel:
    """Shortcut for ``load_checkpoint(path).model``."""
    return load_checkpoint(path).model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with ``torch.nn.utils.prune`` re-parametrisations made permanent (``w = w_orig * mask``)."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith("_mask"):
            continue
        if k.endswith("_orig") and k[:-5] + "_mask" in state:
            out[k[:-5]] = (v * state[k[:-5] + "_mask"]).detach().clone()
        else:
            out[k] = v.detach().clone()
    return out


def save_checkpoint(
    model: DetectionModel, path: str | Path, *, epoch: int = -1, meta: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """Write our format: yaml + names + state dict (pruned widths travel in the tensor shapes).

    The model's ``torch.nn.utils.prune`` masks are baked into the weights and recorded under
    :data:`~orchestrator.yolo.masks.MASKS_KEY`, so a later fine-tune keeps those zeros.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = plain_state_dict(model)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    obj = {
        "format": FORMAT,
        "yaml": model.yaml,
        "names": list(model.names),
        "state_dict": state,
        "epoch": epoch,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "meta": meta or {},
    }
    masks = model_masks(model)
    if masks:
        obj[MASKS_KEY] = pack_masks(masks)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the final name
    return path
