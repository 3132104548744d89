"""Crafted checkpoints: none of them gets its bytes to an unrestricted unpickler or to TorchScript.

Each file, if torch.load were called on it plainly, would run ``touch <marker>``; the loader must
refuse it from its bytes and the marker must never appear.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from crafted import CRAFTED, EXPECTED, pickle_then_zip, trap_jit_load

from orchestrator.errors import CheckpointError
from orchestrator.yolo.checkpoint import FORMAT, load_checkpoint


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


_PEAK_RSS = """
import sys
from orchestrator.errors import CheckpointError
from orchestrator.yolo.checkpoint import load_checkpoint
try:
    load_checkpoint(sys.argv[1])
except CheckpointError as e:
    print(e)
# VmHWM: this program's own peak (ru_maxrss would carry over the forking parent's, e.g. a big pytest)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) // 1024)  # MiB
"""


def _load_in_subprocess(path: Path) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    message, peak = out.stdout.strip().splitlines()
    return message, int(peak)


def test_inflating_checkpoints_stay_under_1_gib(yolov5n, tmp_path: Path):
    """A zip bomb and a stride-0 tensor (bytes that become gigabytes) are refused without the memory."""
    bomb = CRAFTED["zip-bomb"](tmp_path / "bomb.pt", tmp_path / "unused")
    message, peak = _load_in_subprocess(bomb)
    assert "refused to load: its records inflate to 512 MiB" in message and peak < 1024, (message, peak)

    state = {k: v.clone() for k, v in yolov5n.state_dict().items()}
    # 8 stored bytes that claim 2**20 x 2**10 channels: the rebuilt conv alone would take 144 GiB
    state["model.0.conv.weight"] = torch.zeros(1, dtype=torch.half).expand(2**20, 2**10, 6, 6)
    stretched = tmp_path / "stretched.pt"
    torch.save({"format": FORMAT, "yaml": yolov5n.yaml, "names": list(yolov5n.names), "state_dict": state}, stretched)
    message, peak = _load_in_subprocess(stretched)
    assert "refused to load: tensor model.0.conv.weight claims" in message and peak < 1024, (message, peak)
