"""Find a data yaml by reference and make sure its dataset is on disk, following its ``download:`` entry.

A data yaml's relative ``path`` is read against the yaml's own folder. Shipped yamls
(``orchestrator/data/*.yaml``) are copied to ``cache_dir()/datasets/`` when used, so their relative
``path`` (``coco128``) lands in ``cache_dir()/datasets/coco128`` under that same rule.

``download:`` is data, never code: a URL to a zip, or a list of URLs / ``{url, dir, size_gb, sha256}``
entries, each unpacked into ``dir`` under the dataset root (default: the root itself, where a zip's
single top-level folder is dropped, so ``coco128.zip``'s ``coco128/`` becomes the root). Everything is
assembled in a hidden staging folder beside the root and renamed into place only once it holds
``images/`` and ``labels/`` and the yaml's ``train``/``val`` entries: a failed download leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bounded_yaml import YamlRefused, load_yaml
from ..errors import DataError
from .download import fetch
from .locations import (
    ENV_ALLOW_LARGE,
    assets_dir,
    assets_hint,
    datasets_cache,
    in_assets,
    is_url,
    large_downloads_allowed,
    mirrored,
    url_file_name,
)

SHIPPED = Path(__file__).resolve().parents[1] / "data"
LARGE_BYTES = 2 * 10**9  # more than this needs consent: allow_large / --yes / $ORCHESTRATOR_ALLOW_LARGE_DOWNLOADS
_ITEM_KEYS = {"url", "dir", "size_gb", "sha256"}
_CONSENT = f"pass --yes (allow_large=True) or set {ENV_ALLOW_LARGE}=1"


@dataclass(frozen=True)
class DownloadItem:
    """One archive of a dataset: where it comes from and which folder under the dataset root it fills."""

    url: str
    dir: str = "."
    size_gb: float | None = None
    sha256: str | None = None


def resolve_data(ref: str | Path, *, allow_large: bool = False, progress: bool = True) -> Path:
    """Path of a data yaml whose dataset exists locally, downloading it per ``download:`` when missing.

    ``ref`` is a path, else a name looked up in ``$ORCHESTRATOR_ASSETS`` then among the shipped yamls
    (``coco128.yaml``, ``coco.yaml``; the ``.yaml`` suffix may be left out). Downloads over 2 GB
    (COCO: about 20 GB) are refused unless ``allow_large`` or ``$ORCHESTRATOR_ALLOW_LARGE_DOWNLOADS=1``.
    """
    yaml_file, shipped = locate_data(ref)
    source = shipped or yaml_file  # the file messages name: the copy of a shipped yaml is written last
    text = source.read_text()
    spec = _parse(source, text)
    root = dataset_root(yaml_file, spec)
    if not root.is_dir():
        items = download_items(source, spec, root)
        allowed = allow_large or large_downloads_allowed()
        _refuse_large(source, root, items, allowed)
        _download_dataset(source, spec, root, items, allowed=allowed, progress=progress)
    if shipped is not None and (not yaml_file.is_file() or yaml_file.read_text() != text):
        _write_atomic(yaml_file, text)
    return yaml_file


def dataset_root(yaml_file: Path, spec: dict[str, Any]) -> Path:
    """The dataset folder a yaml names: ``path`` (relative to the yaml's folder), else the yaml's folder."""
    path = spec.get("path")
    if not path:
        return yaml_file.parent
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else yaml_file.parent / p


def download_items(yaml_file: Path, spec: dict[str, Any], root: Path) -> list[DownloadItem]:
    """The yaml's ``download:`` entry as items; a missing entry or a script is a :class:`DataError`."""
    entry = spec.get("download")
    if entry is None or entry == "":
        raise DataError(f"{yaml_file}: dataset folder {root} not found and the yaml has no 'download:'; put it there")
    entries = entry if isinstance(entry, list) else [entry]
    items = []
    for i, e in enumerate(entries):
        where = f"{yaml_file}: download[{i}]" if isinstance(entry, list) else f"{yaml_file}: download"
        if isinstance(e, str) and is_url(e.strip()):
            items.append(DownloadItem(e.strip()))
        elif isinstance(e, str):
            raise DataError(
                f"{where}: is a script, and scripts in data yamls are never run; "
                f"fetch the dataset by hand into {root} (or give 'download:' a URL to a zip)"
            )
        elif isinstance(e, dict):
            items.append(_item(where, e))
        else:
            raise DataError(f"{where}: expected a URL or a mapping with 'url', got {type(e).__name__}")
    return items


def _item(where: str, e: dict[str, Any]) -> DownloadItem:
    unknown = set(e) - _ITEM_KEYS
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_ITEM_KEYS)})")
    url = str(e.get("url", "")).strip()
    if not is_url(url):
        raise DataError(f"{where}: 'url' must be an http(s) URL, got {url!r}")
    sub = str(e.get("dir", ".") or ".")
    if Path(sub).is_absolute() or ".." in Path(sub).parts:
        raise DataError(f"{where}: 'dir' must be a folder inside the dataset root, got {sub!r}")
    size = e.get("size_gb")
    if size is not None and not isinstance(size, (int, float)):
        raise DataError(f"{where}: 'size_gb' must be a number, got {size!r}")
    return DownloadItem(url, sub, float(size) if size is not None else None, e.get("sha256"))


def locate_data(ref: str | Path) -> tuple[Path, Path | None]:
    """(yaml to use, shipped source or None), without downloading: the one lookup behind every command and the
    study checks. A shipped yaml is used through its copy in the datasets cache (which may not exist yet)."""
    path = Path(str(ref)).expanduser()
    if path.is_file():
        return path, None
    if len(path.parts) != 1:
        raise DataError(f"{path}: no such data yaml")
    names = [path.name] if path.suffix in (".yaml", ".yml") else [path.name, f"{path.name}.yaml"]
    for name in names:
        found = in_assets(name)
        if found is not None:
            return found, None
    for name in names:
        if (SHIPPED / name).is_file():
            return datasets_cache() / name, SHIPPED / name
    folder = assets_dir()
    shipped = ", ".join(sorted(p.name for p in SHIPPED.glob("*.yaml")))
    looked = f"not here, not in $ORCHESTRATOR_ASSETS ({folder})" if folder else "not here, $ORCHESTRATOR_ASSETS unset"
    raise DataError(f"{ref}: no such data yaml ({looked}); shipped: {shipped}")


def _parse(source: Path, text: str) -> dict[str, Any]:
    try:  # duplicate keys, alias bombs and huge files refused in well under a second
        spec = load_yaml(text)
    except YamlRefused as e:
        raise DataError(f"{source}: {e}") from None
    if not isinstance(spec, dict):
        raise DataError(f"{source}: expected a mapping with 'path', 'train', 'val', 'names'")
    return spec


def _refuse_large(yaml_file: Path, root: Path, items: list[DownloadItem], allowed: bool) -> None:
    """Say how big before starting; the size check at the first bytes covers entries that declare no size."""
    declared = sum(i.size_gb or 0.0 for i in items)
    if allowed or declared * 1e9 <= LARGE_BYTES:
        return
    parts = ", ".join(f"{url_file_name(i.url)} {i.size_gb:g} GB" for i in items if i.size_gb)
    raise DataError(
        f"{yaml_file}: {root.name} is a large download, about {declared:.0f} GB ({parts}), and needs about "
        f"{2 * declared:.0f} GB free under {root.parent} while unpacking; to allow it {_CONSENT}, "
        f"or put the dataset at {root} by hand"
    )


def _size_guard(root: Path, staging: Path, allowed: bool):
    """Checks a Content-Length before the body is read: consent for large files, then free disk for zip + contents."""

    def check(length: int | None) -> None:
        if length is None:
            return
        if length > LARGE_BYTES and not allowed:
            raise DataError(f"{root.name}: a {length / 1e9:.1f} GB download needs consent: {_CONSENT}")
        free = shutil.disk_usage(staging).free
        if 2 * length > free:
            raise DataError(
                f"{root.name}: a {length / 1e9:.1f} GB archive needs about {2 * length / 1e9:.1f} GB free "
                f"under {root.parent} to download and unpack, only {free / 1e9:.1f} GB is free"
            )

    return check


def _download_dataset(
    yaml_file: Path, spec: dict[str, Any], root: Path, items: list[DownloadItem], *, allowed: bool, progress: bool
) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".partial"))
    hint = f"unpack it by hand so that {root} exists, or put {yaml_file.name} and its dataset in {assets_hint()}"
    try:
        for item in items:
            url = mirrored(item.url)
            archive = staging / ".download" / (url_file_name(url) or "archive")
            fetch(
                url,
                archive,
                sha256=item.sha256,
                check=_is_zip,
                check_size=_size_guard(root, staging, allowed),
                hint=hint,
                progress=progress,
            )
            _unpack(archive, staging / item.dir, drop_single_top=Path(item.dir) == Path("."))
            archive.unlink()
        shutil.rmtree(staging / ".download", ignore_errors=True)
        _check_layout(yaml_file, spec, root, staging, items)
        try:
            os.replace(staging, root)
        except OSError:
            if not root.is_dir():  # another process may have finished the same download first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_zip(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise ValueError("not a zip archive")


def _unpack(archive: Path, target: Path, *, drop_single_top: bool) -> None:
    """Extract into ``target`` (merging with what is there); zipfile already refuses absolute and ``..`` names."""
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target, prefix=".unzip."))
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if not m.startswith("__MACOSX/")]
            z.extractall(scratch, members=members)
        top = [p for p in scratch.iterdir()]
        single = len(top) == 1 and top[0].is_dir() and top[0].name not in ("images", "labels")
        _merge(top[0] if drop_single_top and single else scratch, target)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{archive.name}: cannot unpack ({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _merge(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        there = dst / entry.name
        if entry.is_dir() and there.is_dir():
            _merge(entry, there)
        else:
            os.replace(entry, there)


def _check_layout(yaml_file: Path, spec: dict[str, Any], root: Path, staging: Path, items: list[DownloadItem]) -> None:
    """The unpacked dataset must hold images/ and labels/ and every train/val entry the yaml names."""
    urls = ", ".join(mirrored(i.url) for i in items)
    found = {p.name for p in _dirs(staging, depth=3)}
    missing = [d for d in ("images", "labels") if d not in found]
    if missing:
        listing = ", ".join(sorted(p.name for p in staging.iterdir())) or "nothing"
        raise DataError(f"{urls}: the archive did not unpack to images/ and labels/ (missing {missing}; got {listing})")
    for key in ("train", "val"):
        entries = spec.get(key)
        for entry in entries if isinstance(entries, list) else [entries] if entries else []:
            p = Path(str(entry))
            if not p.is_absolute() and not (staging / p).exists():
                raise DataError(f"{yaml_file}: {key}: {entry} not found in what {urls} unpacked to")


def _dirs(folder: Path, depth: int) -> list[Path]:
    out = [p for p in folder.iterdir() if p.is_dir()]
    if depth > 1:
        for p in list(out):
            out += _dirs(p, depth - 1)
    return out


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(name, path)
