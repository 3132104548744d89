"""Checkpoints written by the PyPI ``yolov5`` package pickle its classes as ``yolov5.models.*``: they load too."""

from __future__ import annotations

import torch

from orchestrator.yolo import official_layout
from orchestrator.yolo.checkpoint import load_checkpoint


def test_pypi_package_class_names_load(assets, tmp_path, monkeypatch):
    model = load_checkpoint(assets / "yolov5n.pt").model.float().eval()
    github = official_layout.save_official(model, tmp_path / "github.pt")
    pypi_names = {cls: (f"yolov5.{mod}", name) for cls, (mod, name) in official_layout.OFFICIAL_NAMES.items()}
    monkeypatch.setattr(official_layout, "OFFICIAL_NAMES", pypi_names)
    pypi = official_layout.save_official(model, tmp_path / "pypi.pt")
    assert b"yolov5.models.yolo" in pypi.read_bytes() and b"yolov5.models" not in github.read_bytes()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        a = load_checkpoint(github).model.float().eval()(x)[0]
        b = load_checkpoint(pypi).model.float().eval()(x)[0]
    assert torch.equal(a, b)
