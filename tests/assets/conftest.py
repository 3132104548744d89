"""Fixtures: a local HTTP server per test, a private empty cache, a refused port, a small coco128 zip."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from local_server import LocalServer, coco_subset, zip_bytes

ENV = ("ORCHESTRATOR_ASSETS", "ORCHESTRATOR_DOWNLOAD_BASE", "ORCHESTRATOR_ALLOW_LARGE_DOWNLOADS")


@pytest.fixture
def server():
    s = LocalServer()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty private cache; no assets folder, no mirror, no consent for large downloads."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(folder))
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on: connecting is refused at once, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def coco128_zip(assets: Path) -> bytes:
    """A small zip in the layout of the official coco128.zip: coco128/{images,labels}/train2017/..."""
    entries = {f"coco128/{k}": v for k, v in coco_subset(assets, "train2017", 6).items()}
    entries["coco128/LICENSE"] = b"COCO images: Flickr licenses; annotations CC BY 4.0\n"
    return zip_bytes(entries)
