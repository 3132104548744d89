"""Shared fixtures: the real assets in ``../shared/assets`` (or ``$ORCHESTRATOR_ASSETS``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def assets_dir() -> Path:
    return Path(os.environ.get("ORCHESTRATOR_ASSETS", REPO.parent / "shared" / "assets")).resolve()


@pytest.fixture(scope="session")
def assets() -> Path:
    d = assets_dir()
    if not (d / "yolov5n.pt").is_file() or not (d / "coco128.yaml").is_file():
        msg = (
            f"real test assets not found in {d}: put yolov5n.pt, coco128.yaml and coco128/ there "
            "(see ../shared/assets/README.md) or set ORCHESTRATOR_ASSETS"
        )
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def yolov5n_pt(assets: Path) -> Path:
    return assets / "yolov5n.pt"


@pytest.fixture(scope="session")
def coco128_yaml(assets: Path) -> Path:
    return assets / "coco128.yaml"


@pytest.fixture(scope="session")
def yolov5n(yolov5n_pt: Path):
    """The official yolov5n loaded once per session; tests that change it must deepcopy it."""
    from orchestrator.yolo.checkpoint import load_model

    return load_model(yolov5n_pt)
