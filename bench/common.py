"""What every benchmark script shares: where the assets are, and the arguments that name them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ORCHESTRATOR_ASSETS", REPO.parent / "shared" / "assets"))


def add_asset_args(p: argparse.ArgumentParser, imgsz: int = 320) -> None:
    """--weights, --data and --imgsz, defaulting to the shared yolov5n and coco128."""
    p.add_argument("--weights", default=str(ASSETS / "yolov5n.pt"))
    p.add_argument("--data", default=str(ASSETS / "coco128.yaml"))
    p.add_argument("--imgsz", type=int, default=imgsz)
