"""Fetch one URL into place: a temporary file beside the destination, checked, then ``os.replace``.

A partial, truncated or corrupt download never appears under the final name. Failures become one
:class:`DownloadError` line naming the URL, the reason and where to put the file by hand. Retries are
bounded (:data:`TRIES`, doubling backoff) and spent only on failures that can pass (5xx, timeouts,
cut transfers); a 4xx, a refused connection or an unknown host fail at once, so offline fails fast.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..errors import DownloadError

TRIES = 3
BACKOFF_S = 0.5  # 0.5 s, then 1 s: a passing fault gets a second chance, a dead link costs little
TIMEOUT_S = 15.0  # per socket operation: a stalled connection fails instead of hanging
CHUNK = 1 << 20
_OFFLINE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


class _Transient(Exception):
    """Worth another try."""


class _Fatal(Exception):
    """Another try would fail the same way."""


def split_sha256(url: str) -> tuple[str, str | None]:
    """``url#sha256=<hex>`` -> (url without the fragment, hex): a pinned hash travels with the URL, as pip does."""
    parts = urlsplit(url)
    key, _, value = parts.fragment.partition("=")
    if key.lower() != "sha256" or not value:
        return url, None
    return urlunsplit(parts._replace(fragment="")), value.lower()


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    check: Callable[[Path], None] | None = None,
    check_size: Callable[[int | None], None] | None = None,
    hint: str = "",
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` atomically and return ``dest``.

    ``sha256`` (or a ``#sha256=`` fragment) must match; ``check(tmp)`` raises ``ValueError`` for an unusable
    file; ``check_size(content_length)`` may refuse before the body is read (disk space, consent) by raising
    an ``OrchestratorError``, which is passed on unchanged. ``hint`` ends the error line (where to put
    the file by hand).
    """
    url, pinned = split_sha256(url)
    sha256 = (sha256 or pinned or "").lower() or None
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reason = "no attempt made"
    for attempt in range(TRIES):
        if attempt:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(name)
        try:
            digest = _transfer(url, tmp, progress=progress, check_size=check_size)
            if sha256 and digest != sha256:
                raise _Fatal(f"sha256 mismatch (expected {sha256}, got {digest})")
            if check is not None:
                try:
                    check(tmp)
                except ValueError as e:
                    raise _Fatal(f"downloaded file is not usable: {e}") from None
            os.replace(tmp, dest)
            return dest
        except _Transient as e:
            reason = str(e)
        except _Fatal as e:
            reason = str(e)
            break
        finally:
            tmp.unlink(missing_ok=True)
    tries = f" after {attempt + 1} tries" if attempt else ""
    raise DownloadError(f"cannot download {url}{tries}: {reason}" + (f"; {hint}" if hint else ""))


def _transfer(url: str, tmp: Path, *, progress: bool, check_size: Callable[[int | None], None] | None) -> str:
    """Stream ``url`` into ``tmp``; return the sha256 of what arrived."""
    request = urllib.request.Request(url, headers={"User-Agent": "orchestrator-yolov5"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        message = f"HTTP {e.code} {e.reason}"
        if e.code >= 500 or e.code in (408, 429):
            raise _Transient(message) from None
        raise _Fatal(message) from None
    except urllib.error.URLError as e:
        raise _classify(e.reason) from None
    except (OSError, http.client.HTTPException) as e:
        raise _classify(e) from None
    with response:
        length_header = response.headers.get("Content-Length")
        total = int(length_header) if length_header and length_header.isdigit() else None
        if check_size is not None:
            check_size(total)
        digest = hashlib.sha256()
        received = 0
        try:
            with open(tmp, "wb") as f, _progress_bar(progress, url, total) as advance:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(f"transfer cut after {received} bytes ({type(e).__name__}: {e})") from None
    if total is not None and received != total:
        raise _Transient(f"truncated: got {received} of {total} bytes")
    if received == 0:
        raise _Fatal("the server sent an empty file")
    return digest.hexdigest()


def _classify(reason: object) -> Exception:
    """Offline (refused, unreachable, unknown host) is final; a timeout or reset may pass."""
    text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    if isinstance(reason, socket.gaierror):
        return _Fatal(f"host not found, no network? ({text})")
    if isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS:
        return _Fatal(f"no connection ({text})")
    return _Transient(text)


@contextlib.contextmanager
def _progress_bar(enabled: bool, url: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich bar on stderr (stdout stays clean for ``--json``); a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(f"download {urlsplit(url).path.rsplit('/', 1)[-1]}", total=total)
        yield lambda n: bar.advance(task, n)
