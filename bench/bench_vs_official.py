"""Training throughput, ours next to the official YOLOv5 (PyPI ``yolov5`` 7.0.14), measured side by side in one run.

    .venv/bin/python bench/bench_vs_official.py [--imgsz 320] [--batch 16] [--rounds 2] [--setup] [--json] [--val]
    .venv/bin/python bench/bench_vs_official.py --prune-map [--amount 0.3] | --finetune-map [--epochs 3]

``--val`` compares validation instead: official val.py against ``orchestrator val`` (batch 32), the wall time
of each whole process (imports, data, model, COCO metrics), interleaved, with each side's mAP50-95. The official
side runs with its NMS time limit lifted (``official_train.lift_nms_time_limit``: under load it drops images).

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

``--prune-map`` compares accuracy after uniform unstructured pruning (``--amount``, default 0.3): the official
guide's ``prune(model, amount)`` (L1 on every Conv2d, before BN fusion) then official val.py, against
``orchestrator prune --ratio`` then ``orchestrator val``; each side's file is also validated by the other side's
validator, and the two files' zero patterns are compared weight by weight. ``--finetune-map`` does that, then
fine-tunes ``--epochs`` (default 3) from the unpruned and from each side's pruned file: official train.py with
AutoAnchor off and on (its default), ``orchestrator finetune`` with its default preset and with the official
recipe (``--preset scratch-low``); it reports each result's mAP50-95 by the validator of its own side and by
both validators (official val.py and ``orchestrator val``, on the same file: official train.py's ``best.pt``
re-pickled under the GitHub repository's module names, see ``official_train.repo_layout``), and the conv
sparsity of each saved file. Both print the load average before and after (the figures are accuracies,
not timings, so the load moves only the run time).
"""

from __future__ import annotations

import argparse
import builtins
import datetime as dt
import functools
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


def official_call(python: Path, data: Path, weights: str, folder: Path, *extra: str) -> dict:
    """One run of the official driver; its OFFICIAL_JSON object."""
    _, out = timed([str(python), str(DRIVER), str(data), weights, str(folder), *extra], folder)
    line = next((ln for ln in out.splitlines() if ln.startswith("OFFICIAL_JSON ")), None)
    if line is None:
        raise SystemExit(f"the official driver printed no OFFICIAL_JSON line:\n{out[-3000:]}")
    return json.loads(line.split(" ", 1)[1])


def ours_call(folder: Path, *argv: str) -> dict:
    """One ``orchestrator ... --json`` process; its JSON object."""
    _, out = timed([sys.executable, "-m", "orchestrator", *argv, "--json"], folder)
    return json.loads(out)


def both_vals(python: Path, data: Path, weights: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """mAP50-95 (and mAP50) of one file by official val.py and by ``orchestrator val``, batch 32 for both."""
    size = ["--imgsz", str(args.imgsz), "--batch", "32"]
    off = official_call(python, data, weights, folder, *size, "--val-only")
    ours = ours_call(folder, "val", "--weights", weights, "--data", str(data), *size)
    return {
        "official_val": off["map50_95"], "official_val_map50": off["map50"], "ours_val": ours["map50_95"],
        "ours_val_map50": ours["map50"], "conv_sparsity": off["conv_sparsity"],
    }  # fmt: skip


def zero_pattern_diff(a: str, b: str) -> dict[str, int]:
    """How many conv weights are zero in one file and not in the other (both read by our loader)."""
    import torch

    from orchestrator.yolo.checkpoint import load_checkpoint

    def zeros(path: str) -> dict[str, torch.Tensor]:
        model = load_checkpoint(Path(path)).model
        return {n: m.weight.detach() == 0 for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}

    za, zb = zeros(a), zeros(b)
    if za.keys() != zb.keys():
        raise SystemExit(f"{a} and {b} do not have the same convs")
    return {
        "weights": sum(int(z.numel()) for z in za.values()),
        "differ": sum(int((za[n] != zb[n]).sum()) for n in za),
    }


def prune_map(python: Path, data: Path, tmp: Path, args: argparse.Namespace) -> dict:
    """Uniform unstructured pruning by both sides, each file validated by both validators."""
    folder = tmp / "prune"
    folder.mkdir()
    off_file, ours_file = str(folder / "official-pruned.pt"), str(folder / "ours-pruned.pt")
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    out = {"amount": args.amount, "unpruned": both_vals(python, data, args.weights, folder, args)}
    log(f"unpruned: {out['unpruned']}")
    official_call(python, data, args.weights, folder, "--prune-to", off_file, "--amount", str(args.amount))
    out["official_pruned"] = {"file": off_file, **both_vals(python, data, off_file, folder, args)}
    log(f"official prune(): {out['official_pruned']}")
    ours_call(
        folder, "prune", "--weights", args.weights, "--method", "unstructured", "--ratio", str(args.amount),
        "--official", "--out", ours_file,
    )  # fmt: skip
    out["ours_pruned"] = {"file": ours_file, **both_vals(python, data, ours_file, folder, args)}
    log(f"orchestrator prune: {out['ours_pruned']}")
    out["zero_pattern"] = zero_pattern_diff(off_file, ours_file)
    log(f"zero patterns: {out['zero_pattern']}")
    return out


RECIPES = (
    ("official", "AutoAnchor off"), ("official", "AutoAnchor on"), ("ours", "finetune"), ("ours", "scratch-low"),
)  # fmt: skip


def finetune_map(python: Path, data: Path, tmp: Path, pruned: dict, args: argparse.Namespace) -> list[dict]:
    """Fine-tunes by both sides from the unpruned and the pruned files; every result validated by both."""
    common = ["--imgsz", str(args.imgsz), "--batch", str(args.batch), "--epochs", str(args.epochs)]
    common += ["--workers", str(args.workers), "--seed", "0"]
    starts = {"unpruned": args.weights, "pruned": None}
    runs = []
    for start in ("unpruned", "pruned"):
        for side, variant in RECIPES:
            if start == "pruned" and variant == "AutoAnchor on":
                continue
            weights = starts[start] or pruned[f"{side}_pruned"]["file"]
            folder = tmp / f"ft-{len(runs)}"
            folder.mkdir()
            t = time.perf_counter()
            if side == "official":
                extra = ["--noautoanchor"] if variant == "AutoAnchor off" else []
                r = official_call(python, data, weights, folder, *common, *extra)
                own, file = r["map50_95"], r["best_repo_layout"]  # its best.pt, pickled as the repository does
            else:
                file = str(folder / "ours.pt")
                r = ours_call(
                    folder, "finetune", "--weights", weights, "--data", str(data), *common, "--preset", variant,
                    "--official", "--out", file,
                )  # fmt: skip
                own = r["map50_95"]
            v = both_vals(python, data, file, folder, args)
            row = {"start": start, "side": side, "variant": variant, "weights": weights, "own_map50_95": own, **v}
            row["seconds"] = time.perf_counter() - t
            print(f"fine-tune {row}", file=sys.stderr)
            runs.append(row)
    return runs


def report_maps(out: dict, file) -> None:
    print = functools.partial(builtins.print, file=file)  # noqa: A001
    p = out["prune"]
    print(f"{out['official']} vs orchestrator, imgsz {out['imgsz']}, {out['machine']}, {out['date']}")
    print(f"load average (1 min) before {out['load'][0]:.1f}, after {out['load'][1]:.1f}")
    print("mAP50-95 on the val split      official val.py   orchestrator val   conv sparsity")
    for key, name in (
        ("unpruned", "unpruned"), ("official_pruned", f"official prune({p['amount']})"),
        ("ours_pruned", f"orchestrator prune --ratio {p['amount']}"),
    ):  # fmt: skip
        r = p[key]
        print(f"  {name:30s} {r['official_val']:.5f}           {r['ours_val']:.5f}            {r['conv_sparsity']:.4f}")
    z = p["zero_pattern"]
    print(f"  zero patterns of the two pruned files differ in {z['differ']} of {z['weights']:,} conv weights")
    if out.get("finetune"):
        print(f"fine-tune {out['epochs']} epochs, batch {out['batch']}, seed 0: mAP50-95 by its own validator / "
              "official val.py / orchestrator val, conv sparsity of the saved file")  # fmt: skip
        for r in out["finetune"]:
            print(
                f"  {r['start']:8s} {r['side']:8s} {r['variant']:14s} {r['own_map50_95']:.5f} / "
                f"{r['official_val']:.5f} / {r['ours_val']:.5f}   sparsity {r['conv_sparsity']:.4f}   "
                f"{r['seconds']:.0f} s"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(ap)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved pairs of runs (default 2)")
    ap.add_argument("--workers", type=int, default=2, help="data loader processes, both sides (default 2)")
    ap.add_argument("--venv", type=Path, default=None, help="the official venv (default <cache>/bench/yolov5-official)")
    ap.add_argument("--setup", action="store_true", help="create the official venv / install the package first")
    ap.add_argument("--val", action="store_true", help="compare val.py with `orchestrator val` (process wall time)")
    ap.add_argument("--prune-map", action="store_true", help="mAP after uniform unstructured pruning, both sides")
    ap.add_argument(
        "--finetune-map", action="store_true", help="--prune-map, then fine-tunes by both sides (mAP, sparsity)"
    )
    ap.add_argument("--amount", type=float, default=0.3, help="--prune-map's ratio (default 0.3)")
    ap.add_argument("--epochs", type=int, default=3, help="--finetune-map's epochs (default 3)")
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
        if args.prune_map or args.finetune_map:
            return maps(python, data, Path(tmp), args)
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


def maps(python: Path, data: Path, tmp: Path, args: argparse.Namespace) -> None:
    load = [os.getloadavg()[0]]
    out = {
        "official": OFFICIAL_PACKAGE, "imgsz": args.imgsz, "batch": args.batch, "epochs": args.epochs,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": dt.date.today().isoformat(), "load": load,
    }  # fmt: skip
    out["prune"] = prune_map(python, data, tmp, args)
    if args.finetune_map:
        out["finetune"] = finetune_map(python, data, tmp, out["prune"], args)
    load.append(os.getloadavg()[0])
    report_maps(out, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(out))


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
