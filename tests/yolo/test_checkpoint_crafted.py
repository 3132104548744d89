"""Crafted checkpoints: none of them gets its bytes to an unrestricted unpickler or to TorchScript.

Each file, if torch.load were called on it plainly, would run ``touch <marker>``; the loader must
refuse it from its bytes and the marker must never appear.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from crafted import CRAFTED, EXPECTED, pickle_then_zip, trap_jit_load

from orchestrator.errors import CheckpointError
from orchestrator.yolo.checkpoint import load_checkpoint


@pytest.fixture
def jit_load_trap(monkeypatch, tmp_path: Path) -> Path:
    return trap_jit_load(monkeypatch, tmp_path / "jit-load-called")


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_checkpoint_refused_and_runs_nothing(kind: str, tmp_path: Path, jit_load_trap: Path):
    marker = tmp_path / "pwned"
    path = CRAFTED[kind](tmp_path / f"{kind}.pt", marker)
    with pytest.raises(CheckpointError, match=EXPECTED[kind]):
        load_checkpoint(path)
    assert not marker.exists()
    assert not jit_load_trap.exists()


def test_plain_torch_load_would_have_run_the_pickle_then_zip(tmp_path: Path):
    """The crafted file is real: the unprotected path runs it (so the test above can fail)."""
    marker = tmp_path / "pwned"
    path = pickle_then_zip(tmp_path / "x.pt", marker)
    assert zipfile.is_zipfile(path)
    with pytest.raises(Exception):  # noqa: B017 - torch fails after the payload ran
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_damaged_bytes_fail_the_crc_check(yolov5n_pt: Path, tmp_path: Path):
    data = bytearray(yolov5n_pt.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = bytes(4096)
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged\.pt: damaged checkpoint: record \S+ fails its CRC"):
        load_checkpoint(path)
