"""Test helpers: a real HTTP server on 127.0.0.1 standing in for the download hosts, and zip builders."""

from __future__ import annotations

import io
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Route:
    body: bytes
    truncate: bool = False  # announce the full Content-Length, send half, close
    fail_first: int = 0  # answer 503 this many times first


class LocalServer:
    """Serves registered bytes by path; anything else is a 404. ``hits`` counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, name: str, body: bytes, **kw) -> str:
        self.routes[f"/{name}"] = Route(body, **kw)
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                server.hits[path] += 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                if route.fail_first > 0:
                    route.fail_first -= 1
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body[: len(route.body) // 2] if route.truncate else route.body)

            def log_message(self, *args) -> None:
                pass

        return Handler


def files_under(folder: Path) -> list[str]:
    """Every file (hidden ones too) under ``folder``, relative and sorted; [] when it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def coco_subset(assets: Path, split: str, n: int) -> dict[str, bytes]:
    """The first ``n`` images of a split of the real coco128 and their labels: {"images/<split>/x.jpg": bytes, ...}."""
    images = sorted((assets / "coco128" / "images" / split).glob("*.jpg"))[:n]
    out = {}
    for im in images:
        out[f"images/{split}/{im.name}"] = im.read_bytes()
        label = assets / "coco128" / "labels" / split / f"{im.stem}.txt"
        if label.is_file():
            out[f"labels/{split}/{label.name}"] = label.read_bytes()
    return out
