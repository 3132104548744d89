"""The allow-list loader: official files load, our format round-trips, nothing in a pickle ever runs."""

from __future__ import annotations

import copy
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as tprune

from orchestrator.errors import CheckpointError
from orchestrator.yolo.checkpoint import load_checkpoint, save_checkpoint


def test_official_checkpoint_loads(yolov5n_pt: Path):
    ck = load_checkpoint(yolov5n_pt)
    assert ck.layout == "official"
    assert ck.epoch == -1 and ck.date.startswith("2022-02-08")
    m = ck.model
    assert not m.training and next(m.parameters()).dtype == torch.float32
    assert len(m.names) == 80 and m.names[0] == "person"
    bn = m.model[0].bn
    assert bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.03)


def test_our_format_round_trip(yolov5n, tmp_path: Path):
    m = copy.deepcopy(yolov5n)
    # a narrower (channel-pruned) first layer must survive: widths travel in the tensors
    m.model[0].conv = torch.nn.Conv2d(3, 12, 6, 2, 2, bias=False)
    m.model[0].bn = torch.nn.BatchNorm2d(12, eps=1e-3, momentum=0.03)
    m.model[1].conv = torch.nn.Conv2d(12, 32, 3, 2, 1, bias=False)
    p = save_checkpoint(m.eval(), tmp_path / "ours.pt", meta={"note": "x"})
    ck = load_checkpoint(p)
    assert ck.layout == "orchestrator" and ck.meta == {"note": "x"}
    assert ck.model.model[0].conv.out_channels == 12
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ck.model(x)[0], m(x)[0], rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_prune_masks_made_permanent_on_save(yolov5n, tmp_path: Path):
    m = copy.deepcopy(yolov5n)
    conv = m.model[2].cv1.conv
    tprune.l1_unstructured(conv, "weight", amount=0.5)
    ck = load_checkpoint(save_checkpoint(m, tmp_path / "p.pt"))
    w = ck.model.model[2].cv1.conv.weight
    assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert not any(k.endswith(("_orig", "_mask")) for k in ck.model.state_dict())


class _Exploit:
    """Unpickling this would run a shell command (classic pickle RCE)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _torch_zip_with_pickle(path: Path, payload: bytes) -> None:
    buf = io.BytesIO()
    torch.save({"model": None}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = payload if item.filename.endswith("data.pkl") else src.read(item.filename)
            dst.writestr(item, data)


def test_malicious_pickle_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _torch_zip_with_pickle(evil, pickle.dumps({"model": _Exploit(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load: the pickle references posix\.system"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_plain_torch_save_of_arbitrary_class_refused(tmp_path: Path):
    p = tmp_path / "other.pt"
    torch.save({"model": zipfile.ZipInfo("x")}, p)
    with pytest.raises(CheckpointError, match=r"refused to load: the pickle references zipfile\.ZipInfo"):
        load_checkpoint(p)


@pytest.mark.parametrize(
    "content,match",
    [
        (None, r"missing\.pt: no such weights file"),
        (b"hello, not a checkpoint", r"bad\.pt: not a PyTorch checkpoint"),
    ],
)
def test_bad_files(tmp_path: Path, content, match):
    name = "missing.pt" if content is None else "bad.pt"
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(p)


def test_state_dict_only_file_is_not_a_yolov5_checkpoint(yolov5n, tmp_path: Path):
    p = tmp_path / "sd.pt"
    torch.save(yolov5n.state_dict(), p)
    with pytest.raises(CheckpointError, match=r"sd\.pt: not a YOLOv5 checkpoint"):
        load_checkpoint(p)
