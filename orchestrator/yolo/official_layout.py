"""Save a model as the official YOLOv5 repo writes its ``.pt`` files, without importing that repo.

The official layout is a dict whose ``model`` is the whole fp16 module, pickled under the official
class names (``models.yolo.Model``, ``models.common.Conv`` ...). Our modules keep the official
attribute names, so it is enough to (1) write our classes' globals under the official names, and
(2) give each pickled object the instance attributes official code reads, taken from the official
``yolov5n.pt`` itself:

* every yaml row: ``i`` (index), ``f`` (from), ``type`` (class path), ``np`` (parameter count),
  read by ``BaseModel._forward_once`` (``m.f``, ``m.i in self.save``) and the profiler;
* ``Detect``: ``nc no nl na anchors m inplace stride`` plus ``grid``/``anchor_grid`` lists (rebuilt by
  the official forward on the first call, since their shape never matches), read by ``Detect.forward``,
  ``_make_grid``, ``BaseModel._apply`` and ``attempt_load``; ``dynamic``/``export`` are class
  attributes there;
* the model: ``yaml save names nc inplace stride`` (``attempt_load`` reads ``stride`` and ``names``,
  ``val.py`` reads ``nc``, ``train.py`` reads ``yaml``); ``stride`` is a float32 copy as in official
  files (``.half()`` only reaches Detect's).

Official ``Model.fuse()`` rebuilds each conv from its ``in_channels``/``out_channels`` and weight, so
channel-pruned widths survive it. Class names: ``models.yolo.Model`` exists in every official version
(newer ones alias it to ``DetectionModel``), so it is the most portable name for the top module.
"""

from __future__ import annotations

import copyreg
import datetime as _dt
import pickle
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from . import model as ours
from .masks import MASKS_KEY, model_masks, pack_masks

# Our class -> (official module, official name)
OFFICIAL_NAMES: dict[type, tuple[str, str]] = {
    ours.DetectionModel: ("models.yolo", "Model"),
    ours.Detect: ("models.yolo", "Detect"),
    **{
        getattr(ours, n): ("models.common", n)
        for n in ("Conv", "DWConv", "Bottleneck", "C3", "SPP", "SPPF", "Focus", "Concat")
    },
}
_DROP = {ours.DetectionModel: ("froms",), ours.Detect: ("_grids",)}


def _module_state(obj: nn.Module) -> dict[str, Any]:
    return dict(obj.__getstate__() if hasattr(obj, "__getstate__") else obj.__dict__)


def _row_type(row: nn.Module) -> str:
    inner = row[0] if isinstance(row, nn.Sequential) and not isinstance(row, ours.C3) and len(row) else row
    cls = type(inner)
    if cls in OFFICIAL_NAMES:
        return ".".join(OFFICIAL_NAMES[cls])
    return f"{cls.__module__}.{cls.__qualname__}"


def _extra_state(model: ours.DetectionModel) -> dict[int, dict[str, Any]]:
    """id(module) -> attributes to add to its pickled state."""
    extra: dict[int, dict[str, Any]] = {}
    for i, (row, f) in enumerate(zip(model.model, model.froms)):
        extra[id(row)] = {"i": i, "f": f, "type": _row_type(row), "np": sum(p.numel() for p in row.parameters())}
    det = model.detect
    half = det.anchors.dtype
    extra[id(det)].update(
        grid=[torch.empty(0, dtype=half) for _ in range(det.nl)],
        anchor_grid=[torch.empty(0, dtype=half) for _ in range(det.nl)],
    )
    extra[id(model)] = {
        "nc": det.nc,
        "inplace": bool(model.yaml.get("inplace", True)),
        "stride": det.stride.detach().float().clone(),
    }
    return extra


def _official_pickle_module(extra: dict[int, dict[str, Any]]) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.save`` that writes our classes under the official global names."""

    class OfficialPickler(pickle._Pickler):  # the Python pickler lets us write GLOBAL opcodes ourselves
        def reducer_override(self, obj):
            add = extra.get(id(obj))
            if add is None and type(obj) not in OFFICIAL_NAMES:
                return NotImplemented
            if not isinstance(obj, nn.Module):
                return NotImplemented
            state = _module_state(obj)
            for k in _DROP.get(type(obj), ()):
                state.pop(k, None)
            state.update(add or {})
            return copyreg.__newobj__, (type(obj),), state

        def save_global(self, obj, name=None):
            target = OFFICIAL_NAMES.get(obj) if isinstance(obj, type) else None
            if target is None:
                return super().save_global(obj, name)
            module, qualname = target
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)

    return types.SimpleNamespace(Pickler=OfficialPickler, __name__="official_yolov5_pickle")


def official_module(model: nn.Module) -> ours.DetectionModel:
    """A detached fp16 eval copy with pruning masks baked in, as official files hold it."""
    net = ours.copy_model(model).float().eval()
    for m in net.modules():  # official code cannot run prune hooks, and our loader refuses their globals
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(m, hook._tensor_name)
    net.half()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def save_official(
    model: nn.Module,
    path: str | Path,
    *,
    epoch: int = -1,
    extra: dict[str, Any] | None = None,
    record_masks: bool = True,
) -> Path:
    """Write ``model`` in the official YOLOv5 checkpoint layout (fp16 module under official class names).

    ``torch.load(path)['model']`` works in the official repo, and so do its ``val.py``/``detect.py``
    (``--weights path``); :func:`orchestrator.yolo.checkpoint.load_checkpoint` reads it back. Prune
    masks are baked in and also recorded under the extra top-level key ``prune_masks`` (uint8 tensors,
    which official code unpickles and ignores), so our fine-tune of this file keeps the zeros.
    ``record_masks=False`` leaves the record out: the bytes a deployment needs (what ``measure`` weighs).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    masks = model_masks(model) if record_masks else {}
    net = official_module(model)
    obj: dict[str, Any] = {
        "epoch": epoch,
        "best_fitness": None,
        "model": net,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "date": _dt.datetime.now().isoformat(),
    }
    if masks:
        obj[MASKS_KEY] = pack_masks(masks)
    obj.update(extra or {})
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp, pickle_module=_official_pickle_module(_extra_state(net)))
    tmp.replace(path)
    return path
