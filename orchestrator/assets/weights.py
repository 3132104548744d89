"""Find a checkpoint by reference: a path, ``$ORCHESTRATOR_ASSETS``, the cache, or an official name / URL."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from .download import fetch, split_sha256
from .locations import (
    OFFICIAL_WEIGHTS,
    assets_hint,
    in_assets,
    is_url,
    mirrored,
    official_weights_url,
    url_file_name,
    weights_cache,
)


def locate_weights(ref: str | Path, *, cache_dir: Path | None = None) -> tuple[Path | None, str]:
    """Where ``ref`` is, without downloading: ``(local file, "")``, or ``(None, URL)`` for one that downloads.

    Order: an existing path; ``$ORCHESTRATOR_ASSETS/<name>``; ``<cache>/<name>`` (``cache_dir``, default
    ``cache_dir()/weights``); an official name (``yolov5s.pt``...) or an http(s) URL. Anything else raises
    :class:`CheckpointError`. The one lookup behind every command and the study checks.
    """
    text = str(ref)
    if is_url(text):
        url, _ = split_sha256(text)
        name = url_file_name(url)
        if not name:
            raise CheckpointError(f"{text}: the URL does not end in a file name")
    else:
        path = Path(text).expanduser()
        if path.is_file():
            return path, ""
        if path.exists():
            raise CheckpointError(f"{path}: is a folder, not a weights file")
        if len(path.parts) != 1:
            raise CheckpointError(f"{path}: no such weights file")
        name = path.name
    found = in_assets(name)
    if found is not None:
        return found, ""
    folder = Path(cache_dir) if cache_dir is not None else weights_cache()
    if (folder / name).is_file():
        return folder / name, ""
    if is_url(text):
        return None, mirrored(text)
    if name in OFFICIAL_WEIGHTS:
        return None, official_weights_url(name)
    raise CheckpointError(
        f"{name}: no such weights file (not here, not in {assets_hint()}, not in the cache {folder}); "
        f"official names download by themselves: {', '.join(OFFICIAL_WEIGHTS)}"
    )


def resolve_weights(ref: str | Path, *, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Path of a local checkpoint for ``ref`` (:func:`locate_weights`), downloading and checking it first when needed.

    A download goes into the cache only after it opened with the allow-list loader.
    """
    found, url = locate_weights(ref, cache_dir=cache_dir)
    if found is not None:
        return found
    name = url_file_name(split_sha256(url)[0])
    cached = (Path(cache_dir) if cache_dir is not None else weights_cache()) / name
    check = _opens_as_checkpoint if name.endswith(".pt") else None
    hint = f"download it by hand and put it at {cached} or in {assets_hint()}"
    return fetch(url, cached, check=check, hint=hint, progress=progress)


def _opens_as_checkpoint(tmp: Path) -> None:
    """A downloaded ``.pt`` must open with our allow-list loader before it may enter the cache."""
    from ..yolo.checkpoint import load_checkpoint

    try:
        load_checkpoint(tmp)
    except CheckpointError as e:
        raise ValueError(str(e).replace(f"{tmp}: ", "")) from None
