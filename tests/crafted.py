"""Crafted checkpoints for the loader tests: each would run ``touch <marker>`` if opened unprotected."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import torch


class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def pickle_then_zip(path: Path, marker: Path) -> Path:
    """A legacy (raw pickle) file with a zip glued on: zipfile.is_zipfile says yes, torch reads the pickle."""
    path.write_bytes(pickle.dumps(RunsACommand(marker), protocol=2) + _empty_zip())
    return path


def tar_then_zip(path: Path, marker: Path) -> Path:
    """torch's oldest (tar) format, whose 'sys_info' member torch unpickles, with a zip glued on."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            data = pickle.dumps(RunsACommand(marker), protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue() + _empty_zip())
    return path


class _Scripted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.w

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        self.w = state[0]
        self.training = state[1]


def torchscript(path: Path, marker: Path) -> Path:
    """A TorchScript archive with a ``__setstate__``: torch.load would hand it to torch.jit.load, which runs it."""
    torch.jit.save(torch.jit.script(_Scripted()), str(path))
    return path


def zip_with_evil_pickle(path: Path, marker: Path) -> Path:
    """A well-formed torch.save zip whose data.pkl calls os.system (the allow-list's case)."""
    torch.save({"model": RunsACommand(marker)}, path)
    return path


def zip_bomb(path: Path, marker: Path) -> Path:
    """A small zip whose data.pkl inflates to 512 MiB (deflate squeezes zeros ~1000x)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(512):
                f.write(block)
    return path


CRAFTED = {
    "pickle-then-zip": pickle_then_zip,
    "tar-then-zip": tar_then_zip,
    "torchscript": torchscript,
    "zip-evil-pickle": zip_with_evil_pickle,
    "zip-bomb": zip_bomb,
}
EXPECTED = {
    "pickle-then-zip": r"not a PyTorch checkpoint \(expected a zip archive written by torch\.save\)",
    "tar-then-zip": r"not a PyTorch checkpoint \(expected a zip archive written by torch\.save\)",
    "torchscript": r"refused to load: a TorchScript archive",
    "zip-evil-pickle": r"refused to load: the pickle references posix\.system",
    "zip-bomb": r"refused to load: its records inflate to 512 MiB",
}


def trap_jit_load(monkeypatch, marker: Path) -> Path:
    """Make torch.jit.load leave ``marker`` if anything calls it: TorchScript must never be opened."""
    real = torch.jit.load

    def trapped(*args, **kwargs):
        marker.touch()
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", trapped)
    return marker
