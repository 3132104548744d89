"""Arguments refused before the work starts: an image size no machine can hold, an output nobody can write.

Without these, ``val --imgsz 99968`` dies in numpy after minutes of loading (one letterboxed image alone
would be 30 GB), and ``prune --out /proc/x.pt`` fails with a traceback after the pruning is done.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import OrchestratorError
from ..study.spec import MAX_IMGSZ


def check_imgsz(imgsz: int, flag: str = "--imgsz") -> None:
    """Refuse an image size above MAX_IMGSZ (the same limit as a study file's ``imgsz``)."""
    if imgsz > MAX_IMGSZ:
        gb = imgsz * imgsz * 3 / 1e9
        raise OrchestratorError(
            f"{flag}: at most {MAX_IMGSZ} pixels, got {imgsz} (one {imgsz}x{imgsz} image alone is {gb:.0f} GB)"
        )


def check_out(out: str | Path, flag: str = "--out") -> Path:
    """The output path, once a file can be created in its folder (or the nearest existing folder above it)."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise OrchestratorError(f"{flag}: {path} is a folder: give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OrchestratorError(f"{flag}: cannot write to {folder} ({e.strerror or e}): choose another path") from None
    return path
