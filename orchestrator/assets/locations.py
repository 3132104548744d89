"""Where assets are looked for and fetched from: the cache folder, ``$ORCHESTRATOR_ASSETS``, official URLs.

Everything here reads the environment when called (never at import), so a test or a worker that sets
``ORCHESTRATOR_CACHE`` / ``ORCHESTRATOR_DOWNLOAD_BASE`` sees its own values.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

ENV_CACHE = "ORCHESTRATOR_CACHE"
ENV_ASSETS = "ORCHESTRATOR_ASSETS"
ENV_DOWNLOAD_BASE = "ORCHESTRATOR_DOWNLOAD_BASE"
ENV_ALLOW_LARGE = "ORCHESTRATOR_ALLOW_LARGE_DOWNLOADS"

# The official YOLOv5 v7.0 release carries every detection checkpoint (P5 and P6).
OFFICIAL_WEIGHTS_BASE = "https://github.com/ultralytics/yolov5/releases/download/v7.0"
OFFICIAL_WEIGHTS = tuple(f"yolov5{size}{p6}.pt" for p6 in ("", "6") for size in "nsmlx")
# URLs under these prefixes are "official": ORCHESTRATOR_DOWNLOAD_BASE redirects them to a mirror.
OFFICIAL_PREFIXES = (
    "https://github.com/ultralytics/",
    "https://ultralytics.com/assets/",
    "http://images.cocodataset.org/",
    "https://images.cocodataset.org/",
)


def cache_dir() -> Path:
    """The cache folder: ``$ORCHESTRATOR_CACHE``, else the user's cache dir (``~/.cache/orchestrator`` on Linux)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "orchestrator"


def weights_cache() -> Path:
    """Folder of downloaded checkpoints: ``cache_dir()/weights``."""
    return cache_dir() / "weights"


def datasets_cache() -> Path:
    """Folder of downloaded datasets and of the shipped data yamls' copies: ``cache_dir()/datasets``."""
    return cache_dir() / "datasets"


def assets_dir() -> Path | None:
    """The pre-seeded folder ``$ORCHESTRATOR_ASSETS`` (for machines without internet), or None when unset."""
    env = os.environ.get(ENV_ASSETS)
    return Path(env).expanduser() if env else None


def in_assets(name: str) -> Path | None:
    """``$ORCHESTRATOR_ASSETS/<name>`` when that file exists."""
    folder = assets_dir()
    if folder is not None and (folder / name).is_file():
        return folder / name
    return None


def assets_hint() -> str:
    """How to name the assets folder in a message: its value when set, the variable otherwise."""
    folder = assets_dir()
    return f"$ORCHESTRATOR_ASSETS ({folder})" if folder else "a folder named by $ORCHESTRATOR_ASSETS"


def is_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def url_file_name(url: str) -> str:
    """Last path component of a URL, without query or fragment."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def mirrored(url: str) -> str:
    """An official URL rewritten to ``$ORCHESTRATOR_DOWNLOAD_BASE/<file name>`` when that mirror is set."""
    base = os.environ.get(ENV_DOWNLOAD_BASE)
    if not base or not url.startswith(OFFICIAL_PREFIXES):
        return url
    fragment = urlsplit(url).fragment
    return f"{base.rstrip('/')}/{url_file_name(url)}" + (f"#{fragment}" if fragment else "")


def official_weights_url(name: str) -> str:
    """Release URL of an official checkpoint name (through the mirror when one is set)."""
    return mirrored(f"{OFFICIAL_WEIGHTS_BASE}/{name}")


def large_downloads_allowed() -> bool:
    """True when ``$ORCHESTRATOR_ALLOW_LARGE_DOWNLOADS`` says yes (1/true/yes)."""
    return os.environ.get(ENV_ALLOW_LARGE, "").strip().lower() in ("1", "true", "yes")


def local_ref(ref: str, base_dir: Path) -> str:
    """A relative path that exists next to the study file wins over the working folder and official names."""
    p = Path(ref).expanduser()
    if not p.is_absolute() and len(p.parts) > 1 and (base_dir / p).exists():
        return str(base_dir / p)
    return ref
