"""Label scan at scale: a first scan and a cached re-read of a synthetic N-image split (default 100,000).

Every image is a copy of one small JPEG (the scan's cost per file is what is measured, not the disk), each
with its own label file of COCO-like box counts. Run: ``python bench/bench_label_scan.py --n 100000``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from orchestrator.yolo.labels import scan_labels


def build(root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes()
    files = []
    for i in range(n):
        f = root / "images" / f"{i:07d}.jpg"
        f.write_bytes(jpeg)
        k = int(rng.poisson(7))
        rows = [f"{rng.integers(80)} {rng.uniform(0.2, 0.8):.4f} {rng.uniform(0.2, 0.8):.4f} .1 .1" for _ in range(k)]
        (root / "labels" / f"{i:07d}.txt").write_text("\n".join(rows))
        files.append(f)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scan-bench-"))
    try:
        t = time.perf_counter()
        files = build(root / "ds", a.n)
        print(f"built {a.n:,} images + labels in {time.perf_counter() - t:.1f} s")
        for what in ("first scan", "cached re-read", "cached re-read"):
            t = time.perf_counter()
            found = scan_labels(files, 80, root / "cache")
            print(f"{what}: {time.perf_counter() - t:.2f} s ({len(found.files):,} images, {found.instances:,} boxes)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
