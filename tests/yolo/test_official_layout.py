"""Official-layout saving: only official global names in the pickle, the attributes official code reads,
and our allow-list loader reading it back with identical outputs.

We cannot run the official repo here. What it needs was checked against the official yolov5n.pt: the
same set of instance attributes per official class (test below), plus an official-style forward written
from the public behaviour (``BaseModel._forward_once`` walks ``m.f``/``m.i``/``save``; ``Detect``
rebuilds ``grid``/``anchor_grid`` when their shape differs and decodes with ``stride`` and ``anchors``).
"""

from __future__ import annotations

import copy
import pickle
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from pickle_globals import pickle_globals as _globals

from orchestrator.prune import apply_ratios, uniform_ratios
from orchestrator.yolo import model as ours
from orchestrator.yolo.checkpoint import _read, load_checkpoint
from orchestrator.yolo.masks import MASKS_KEY, model_masks
from orchestrator.yolo.official_layout import save_official

TRAIN_TIME_ONLY = {"hyp", "class_weights", "yaml_file"}  # set by official train.py, read by it only


@pytest.fixture(scope="module")
def structured(yolov5n):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, uniform_ratios(m, 0.3, method="structured"), method="structured")
    return m.eval()


@pytest.fixture(scope="module")
def saved(structured, tmp_path_factory) -> Path:
    return save_official(structured, tmp_path_factory.mktemp("official") / "pruned.pt")


def test_only_official_globals(saved, yolov5n_pt):
    found = _globals(saved)
    assert not any("orchestrator" in g for g in found), found
    assert {"models.yolo.Model", "models.yolo.Detect", "models.common.Conv", "models.common.C3"} <= found
    # nothing the official file itself does not reference
    assert found <= _globals(yolov5n_pt), found - _globals(yolov5n_pt)


def test_file_layout(saved):
    obj = _read(saved)
    assert obj["epoch"] == -1 and obj["ema"] is None and obj["optimizer"] is None and obj["best_fitness"] is None
    assert isinstance(obj["date"], str)
    net = obj["model"]
    assert type(net).official_name == "models.yolo.Model"
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in net.parameters())
    assert net.nc == 80 and len(net.names) == 80 and net.inplace is True
    assert net.stride.dtype == torch.float32 and net.stride.tolist() == [8, 16, 32]
    det = net.model[24]
    assert det.stride.dtype == torch.float16 and (det.nc, det.no, det.nl, det.na) == (80, 85, 3, 3)
    assert len(det.grid) == len(det.anchor_grid) == 3


def test_same_attributes_as_the_official_file(saved, yolov5n_pt):
    def attrs(net):
        d: dict[str, set[str]] = {}
        for _, m in net.named_modules():
            name = getattr(type(m), "official_name", type(m).__name__)
            d.setdefault(name, set()).update(k for k in vars(m) if not k.startswith("_"))
        return d

    mine, official = attrs(_read(saved)["model"]), attrs(_read(yolov5n_pt)["model"])
    assert set(mine) == set(official)
    for cls, keys in official.items():
        assert keys - TRAIN_TIME_ONLY <= mine[cls], (cls, keys - mine[cls])


def test_layer_attributes(saved, structured):
    net = _read(saved)["model"]
    for i, (row, f) in enumerate(zip(net.model, structured.froms)):
        assert (row.i, row.f) == (i, f)
        assert row.np == sum(p.numel() for p in structured.model[i].parameters())
    assert net.model[0].type == "models.common.Conv" and net.model[11].type == "torch.nn.modules.upsampling.Upsample"
    assert net.model[24].type == "models.yolo.Detect" and net.save == structured.save
    for m in net.modules():  # official fuse() rebuilds convs from these
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[:2] == (m.out_channels, m.in_channels // m.groups)


def test_allow_list_loader_reads_it_back(saved, structured):
    ck = load_checkpoint(saved)
    assert ck.layout == "official" and ck.epoch == -1
    x = torch.rand(2, 3, 256, 192)
    ref = copy.deepcopy(structured).half().float()  # the file is fp16
    with torch.no_grad():
        torch.testing.assert_close(ck.model(x)[0], ref(x)[0], rtol=0, atol=0)


class _Official(pickle.Unpickler):
    """Reads the file the way the official repo would: official names resolve to classes whose
    forward follows the official code paths (ours for blocks; model and Detect re-implemented below)."""

    def find_class(self, module, name):
        if module == "models.yolo":
            return {"Model": _OfficialModel, "DetectionModel": _OfficialModel, "Detect": _OfficialDetect}[name]
        if module == "models.common":
            return getattr(ours, name)
        return super().find_class(module, name)


class _OfficialModel(nn.Module):
    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


class _OfficialDetect(nn.Module):
    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                t = self.anchors[i].dtype
                yv, xv = torch.meshgrid(torch.arange(ny, dtype=t), torch.arange(nx, dtype=t), indexing="ij")
                self.grid[i] = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2) - 0.5
                self.anchor_grid[i] = (
                    (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).expand(1, self.na, ny, nx, 2)
                )
            xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + self.grid[i]) * self.stride[i]
            wh = (wh * 2) ** 2 * self.anchor_grid[i]
            z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return torch.cat(z, 1), x


def test_official_style_forward_from_the_pickled_attributes(saved, structured):
    pm = types.SimpleNamespace(Unpickler=_Official, load=pickle.load, __name__="official_sim")
    obj = torch.load(saved, map_location="cpu", pickle_module=pm, weights_only=False)
    net = obj["model"].float().eval()  # attempt_load: .float(); Detect.stride is converted by hand below
    net.model[24].stride = net.model[24].stride.float()
    net.model[24].grid = [g.float() for g in net.model[24].grid]
    x = torch.rand(1, 3, 320, 256)
    with torch.no_grad():
        y, raw = net(x)
        y0, raw0 = copy.deepcopy(structured).half().float()(x)
    torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-4)
    assert [r.shape for r in raw] == [r.shape for r in raw0]


def test_masked_model_is_saved_with_masks_baked_in_and_recorded(yolov5n, yolov5n_pt, tmp_path):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, uniform_ratios(m, 0.3))
    path = save_official(m, tmp_path / "u.pt")
    assert not any("prune" in g for g in _globals(path))
    # the mask record adds one storage type (uint8 bits) to what the official file references, nothing else
    assert _globals(path) - _globals(yolov5n_pt) == {"torch.ByteStorage"}
    ck = load_checkpoint(path)
    w = ck.model.model[6].m[0].cv1.conv.weight
    assert (w == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.equal(ck.masks["model.6.m.0.cv1.conv"], w != 0) and len(ck.masks) == len(model_masks(m))
    pm = types.SimpleNamespace(Unpickler=_Official, load=pickle.load, __name__="official_sim")
    obj = torch.load(path, map_location="cpu", pickle_module=pm, weights_only=False)  # as the official repo reads it
    assert set(obj[MASKS_KEY]["convs"]) == set(ck.masks) and obj["model"].nc == 80
