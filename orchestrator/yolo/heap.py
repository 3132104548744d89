"""Hand the C heap's freed pages back to the OS between the phases of a CPU fine-tune (glibc ``malloc_trim``).

Why: a training step frees its activations (gigabytes at 640) into malloc's heap, which keeps them for the next
step; validation then allocates other sizes that do not fit those holes, so the process grows past the step's own
peak. Trimming once before each validation costs one round of page faults at the next step (a fraction of a
second), not one per step as a smaller mmap threshold would (measured in docs/data.md).
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)  # glibc only (musl has none)
    except OSError:
        return None


def trim_heap() -> bool:
    """Return the heap's free pages to the OS; True when glibc released some (False elsewhere: nothing to do)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
