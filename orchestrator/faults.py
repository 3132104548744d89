"""Storage and resource faults met while working (disk full, read-only, a damaged database) as one line.

What can be known before the work starts is refused then (``study.checks.check_stores``, the commands' own
argument checks). A disk that fills up or a database that breaks mid-study cannot be: the CLI turns those
exceptions into one line and exit code 1 instead of a traceback. The Optuna storage keeps what was told
before the fault, so the same command resumes once the cause is fixed.
"""

from __future__ import annotations

import errno
import re

from .urls import mask_url

EXIT_CODE = 1  # the work started and stopped on a fault (2 is kept for input refused before anything starts)
_IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def fault_line(e: BaseException) -> str | None:
    """One line saying what failed and what to do, or None when ``e`` is not a storage or resource fault.

    Libraries wrap the cause (Optuna's StorageInternalError over SQLAlchemy's over sqlite3's): the chain is
    followed, and the first fault in it named.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        line = _one(e)
        if line is not None:
            return line
        e = e.__cause__ or e.__context__
    return None


_OOM_HINT = "lower batch or imgsz, or free memory, then run the same command again"
# What the allocators say when they give up: PyTorch's CPU allocator and CUDA caching allocator raise a plain
# RuntimeError (or torch.OutOfMemoryError, one of its subclasses) rather than MemoryError; ONNX Runtime's arena
# raises its own type. Matched by text so no library is imported here.
_ALLOCATOR_MESSAGES = (
    "DefaultCPUAllocator: can't allocate memory",
    "CUDA out of memory",
    "CUDA error: out of memory",
    "Failed to allocate memory for requested buffer",
)
_TRIED = re.compile(r"(?:tried to allocate|buffer of size) ([0-9]+(?:\.[0-9]+)? ?(?:[KMGT]i?B|bytes)?)", re.IGNORECASE)


def _one(e: BaseException) -> str | None:
    if isinstance(e, MemoryError):
        return f"out of memory: {_OOM_HINT}"
    if _is_allocator_failure(e):
        tried = _TRIED.search(str(e))
        what = f" (an allocation of {_size(tried.group(1))} failed)" if tried else ""
        return f"out of memory{what}: {_OOM_HINT}"
    if isinstance(e, OSError) and e.errno in _IO_ERRNOS:
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}: free space or fix permissions, then run the same command again"
    if _is_database_error(e):
        first = mask_url(str(e)).strip().splitlines()[0] if str(e) else type(e).__name__
        return (
            f"a database write or read failed: {first[:200]}: free space or fix the file's permissions, then run "
            "the same command again (finished trials are kept in the Optuna storage)"
        )
    return None


def _is_allocator_failure(e: BaseException) -> bool:
    """PyTorch's or ONNX Runtime's allocator giving up, by type name or message; never a MemoryError."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(e).__mro__):
        return True
    if not isinstance(e, RuntimeError) and not type(e).__module__.startswith("onnxruntime"):
        return False
    text = str(e)
    return any(m in text for m in _ALLOCATOR_MESSAGES)


def _size(text: str) -> str:
    """``800000000000 bytes`` or a bare byte count as GB; a size torch already wrote in units unchanged."""
    n = text.removesuffix("bytes").strip()
    return f"{int(n) / 1e9:,.1f} GB" if n.isdigit() else text


def _is_database_error(e: BaseException) -> bool:
    """sqlite3 and SQLAlchemy operational or database errors, found by type name (no import of either)."""
    for cls in type(e).__mro__:
        if cls.__module__.split(".")[0] in ("sqlite3", "sqlalchemy") and cls.__name__ in (
            "OperationalError",
            "DatabaseError",
        ):
            return True
    return False
