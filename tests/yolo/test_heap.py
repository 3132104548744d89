"""trim_heap hands freed heap pages back on glibc Linux, and is a no-op answer elsewhere."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from orchestrator.yolo.heap import trim_heap


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_heap_is_returned():
    blocks = [np.ones(100_000 // 8) for _ in range(640)]  # 64 MB in blocks under the mmap threshold: the heap
    del blocks
    assert trim_heap() is True
