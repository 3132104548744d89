"""Training throughput, ours next to the official YOLOv5 (PyPI ``yolov5`` 7.0.14), measured side by side in one run.

    .venv/bin/python bench/bench_vs_official.py [--imgsz 320] [--batch 16] [--rounds 2] [--setup] [--json] [--val]

``--val`` compares validation instead: official val.py against ``orchestrator val`` (batch 32), the wall time
of each whole process (imports, data, model, COCO metrics), interleaved, with each side's mAP50-95.

The official code runs from a venv of its own (default ``<cache>/bench/yolov5-official``; ``--setup`` creates
it: ``python -m venv``, a ``.pth`` line that lends it this venv's torch, then ``pip install yolov5==7.0.14``);
it is never a dependency of this project. Both sides train one epoch of the data's train split from the same
weights at the same size and batch, each in a fresh process, interleaved (official, ours, official, ours ...)
so that a shared machine's load hits both alike. The figure is images/s of the training loop, validation
excluded: for the official side the time between its ``on_train_epoch_start`` and ``on_train_epoch_end``
callbacks (``bench/official_train.py``), for ours ``finetune``'s own per-epoch figure, with the official
recipe (``--preset scratch-low``) so both do the same augmentation. Ours decodes the images into RAM before
the epoch (the official default reads them from disk): that is part of what is compared. Quote the ratio of the
medians; absolute figures hold for the machine and the date printed with them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, add_asset_args

OFFICIAL_PACKAGE = "yolov5==7.0.14"
DRIVER = REPO / "bench" / "official_train.py"


def default_venv() -> Path:
    from orchestrator.assets import cache_dir

    return cache_dir() / "bench" / "yolov5-official"


def setup_venv(venv: Path) -> Path:
    """Create the official venv (torch borrowed from this one through a .pth line) and install the package."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        ours = next(p for p in sys.path if p.endswith("site-packages"))
        Path(site, "borrowed-torch.pth").write_text(ours + "\n")
    # yolov5 7.0 imports pkg_resources, which newer setuptools no longer ship
    subprocess.run([str(python), "-m", "pip", "install", "-q", OFFICIAL_PACKAGE, "setuptools<70"], check=True)
    return python


def private_copy(data_yaml: Path, folder: Path) -> Path:
    """The dataset under ``folder``: each image linked, labels copied (the official loader writes its label cache
    beside the labels, which must never land in the shared assets). Files are linked one by one, never a folder:
    the official check_dataset resolves the split folders, which would follow a linked folder back into the
    assets and put the cache there."""
    doc = yaml.safe_load(data_yaml.read_text())
    root = Path(doc.get("path") or ".")
    root = root if root.is_absolute() else data_yaml.parent / root
    dst = folder / "data"
    for sub in ("images", "labels"):
        (dst / sub).mkdir(parents=True)
        for split in sorted(d for d in (root / sub).iterdir() if d.is_dir()):
            if sub == "images":
                (dst / sub / split.name).mkdir()
                for f in sorted(split.iterdir()):
                    (dst / sub / split.name / f.name).symlink_to(f.resolve())
            else:
                subprocess.run(["cp", "-r", str(split), str(dst / sub / split.name)], check=True)
    doc["path"] = str(dst)
    out = folder / "data.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def official_run(python: Path, data: Path, weights: str, folder: Path, args: argparse.Namespace) -> float:
    cmd = [str(python), str(DRIVER), str(data), weights, str(folder), "--imgsz", str(args.imgsz)]
    cmd += ["--batch", str(args.batch), "--epochs", "1", "--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("OFFICIAL_JSON ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"official train failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(line.split(" ", 1)[1])
    return r["images_per_epoch"] / r["epoch_s"][0]


def timed(cmd: list[str], folder: Path) -> tuple[float, str]:
    """(wall seconds of the whole process, its stdout); exits with its stderr when it fails."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)
    if proc.returncode:
        raise SystemExit(f"{cmd[1]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t, proc.stdout


def val_pair(python: Path, data: Path, weights: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Whole-process wall seconds of official val.py and of ``orchestrator val`` (batch 32), and their mAP50-95."""
    size = ["--imgsz", str(args.imgsz), "--batch", "32"]
    s_off, out = timed([str(python), str(DRIVER), str(data), weights, str(folder), *size, "--val-only"], folder)
    line = next(ln for ln in out.splitlines() if ln.startswith("OFFICIAL_JSON "))
    ours = [sys.executable, "-m", "orchestrator", "val", "--weights", weights, "--data", str(data), *size, "--json"]
    s_ours, out2 = timed(ours, folder)
    return {
        "official_s": s_off, "ours_s": s_ours,
        "official_map": json.loads(line.split(" ", 1)[1])["map50_95"], "ours_map": json.loads(out2)["map50_95"],
    }  # fmt: skip


def our_run(data: Path, weights: str, folder: Path, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "orchestrator", "finetune", "--weights", weights, "--data", str(data)]
    cmd += ["--epochs", "1", "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--preset", "scratch-low"]
    cmd += ["--workers", str(args.workers), "--out", str(folder / "ours.pt"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)
    if proc.returncode:
        raise SystemExit(f"orchestrator finetune failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)["history"][0]["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(ap)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved pairs of runs (default 2)")
    ap.add_argument("--workers", type=int, default=2, help="data loader processes, both sides (default 2)")
    ap.add_argument("--venv", type=Path, default=None, help="the official venv (default <cache>/bench/yolov5-official)")
    ap.add_argument("--setup", action="store_true", help="create the official venv / install the package first")
    ap.add_argument("--val", action="store_true", help="compare val.py with `orchestrator val` (process wall time)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    venv = args.venv or default_venv()
    python = setup_venv(venv) if args.setup else venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no official venv at {venv}: run with --setup once (installs {OFFICIAL_PACKAGE} there)")
    rows = {"official": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="bench-official-") as tmp:
        data = private_copy(Path(args.data), Path(tmp))
        if args.val:
            return report_val([val_pair(python, data, args.weights, Path(tmp), args) for _ in range(args.rounds)])
        for i in range(args.rounds):
            for side in ("official", "ours"):
                folder = Path(tmp) / f"{side}-{i}"
                folder.mkdir()
                if side == "official":
                    rows[side].append(official_run(python, data, args.weights, folder, args))
                else:
                    rows[side].append(our_run(data, args.weights, folder, args))
                print(f"round {i + 1} {side}: {rows[side][-1]:.1f} images/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in rows.items()}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    out = {
        "imgsz": args.imgsz, "batch": args.batch, "rounds": rows, "median": med, "ratio": med["ours"] / med["official"],
        "machine": machine, "official": OFFICIAL_PACKAGE, "date": dt.date.today().isoformat(),
    }  # fmt: skip
    if args.json:
        print(json.dumps(out))
        return
    print(f"training images/s at {args.imgsz}, batch {args.batch}, 1 epoch, {out['machine']}, {out['date']}")
    for side, v in rows.items():
        print(f"  {side:8s} " + "  ".join(f"{x:.1f}" for x in v) + f"   median {med[side]:.1f}")
    print(f"  ours / official: {out['ratio']:.2f}x")


def report_val(pairs: list[dict[str, float]]) -> None:
    med = {k: statistics.median(p[k] for p in pairs) for k in ("official_s", "ours_s")}
    print(f"val at the given size, batch 32, whole process, {platform.machine()}, {dt.date.today().isoformat()}")
    for p in pairs:
        print(
            f"  official {p['official_s']:.1f} s (mAP50-95 {p['official_map']:.4f})   "
            f"ours {p['ours_s']:.1f} s ({p['ours_map']:.4f})"
        )
    print(f"  official / ours wall time: {med['official_s'] / med['ours_s']:.2f}x (medians)")


if __name__ == "__main__":
    main()
