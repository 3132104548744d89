"""The global names a ``torch.save`` pickle references: what an unpickler must resolve to open the file."""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path


def pickle_globals(path: Path) -> set[str]:
    """``module.name`` of every GLOBAL opcode in the archive's ``data.pkl`` (protocol 2 only, as official files)."""
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    out = set()
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            out.add(arg.replace(" ", "."))
        assert op.name != "STACK_GLOBAL"  # protocol 2, as official files
    return out
