"""``orchestrator pareto STUDY [--export DIR]``: the Pareto front, and its checkpoints (+ ONNX) copied out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..study.dimensions import parameter_names
from . import pareto_register


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pareto",
        help="the Pareto front of a study; --export copies its checkpoints and ONNX files",
        description="List the non-dominated trials. With --export DIR, fetch each one's pruned checkpoint and "
        "ratio map from MLflow into DIR/trial-NNNN/ and export it to ONNX. With --register NAME, make one trial's "
        "ONNX model a new version of NAME in the MLflow Model Registry.",
    )
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--export", metavar="DIR", default=None, help="folder to copy the front's checkpoints into")
    p.add_argument("--no-onnx", action="store_true", help="with --export: copy the checkpoints only")
    p.add_argument(
        "--test",
        action="store_true",
        help="also the uniform baselines, and every figure on the data's held-out test: split (validated now, "
        "from the saved checkpoint, for a trial that ran without one); logged to MLflow as test_map50_95",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    pareto_register.add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    if pareto_register.wants_register(args):
        return pareto_register.run(args, lambda spec, n, folder: _export(spec, n, folder, onnx=True))
    import os

    from ..search import ATTR_BASELINE, load_existing, pareto_front, revealed, trial_summary
    from ..study.file import load_study_spec

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a table follows, not progress bars
    spec = load_study_spec(args.study)
    trials = load_existing(spec).get_trials(deepcopy=False)
    front = sorted(pareto_front(trials, spec.directions), key=lambda t: t.number)
    test = revealed(trials, spec.directions)  # sealed by the trials: the front's and the baselines' only
    if args.test:
        from ..tracking.runs import log_held_out_figures
        from ..trial.heldout import validate_on_test

        on_front = {t.number for t in front}
        done = [t for t in trials if t.state.name == "COMPLETE" and t.number not in on_front]
        uniform = [t for t in done if t.user_attrs.get(ATTR_BASELINE) is not None]
        missing = [t.number for t in front + uniform if t.number not in test]
        test.update(validate_on_test(spec, missing, lambda n, d: _export(spec, n, d, onnx=False)))
        log_held_out_figures(spec, test)
    else:
        uniform = []
    records = [dict(trial_summary(t), test=test.get(t.number)) for t in front]
    if args.export:
        exported = _export_front(spec, [r["number"] for r in records], Path(args.export), onnx=not args.no_onnx)
        for rec in records:
            rec["files"] = [str(p) for p in exported[rec["number"]]]
    baselines = [dict(trial_summary(t), test=test.get(t.number)) for t in uniform]  # with --test, after the front
    if args.json:
        print(json.dumps({"study": spec.name, "front": records, "uniform": baselines}, default=str))
        return 0
    from rich.table import Table

    from .console import stdout_console

    metrics = [o.metric for o in spec.objectives]
    tests = ["test_map50_95", "test_map50"] if test else []
    t = Table(title=f"{spec.name}: Pareto front ({len(records)} trials)", title_justify="left")
    dims = parameter_names(spec.space)
    for col in ["#", "origin", *metrics, *tests, *dims, "files"]:
        t.add_column(col, justify="right" if col != "files" else "left", overflow="fold")
    for r in records + baselines:
        t.add_row(
            str(r["number"]),
            r["origin"],
            *[f"{r['metrics'].get(m, float('nan')):.4g}" for m in metrics],
            *[f"{r['test'][k]:.4g}" if r["test"] else "-" for k in tests],
            *[_show(r["dimensions"][d]) for d in dims],
            "\n".join(r.get("files", [])),
        )
    stdout_console().print(t)
    return 0


def _show(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _export_front(spec, numbers: list[int], out: Path, *, onnx: bool) -> dict[int, list[Path]]:
    """Export every trial into a hidden folder beside ``out``, then move it in: never a half-written export.

    A trial whose checkpoint is missing (a rebuilt MLflow store) stops the export with ``out`` as it was.
    """
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent)).resolve()  # same disk: atomic
    try:
        files = {n: _export(spec, n, tmp, onnx=onnx) for n in numbers}
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if not out.exists():
            tmp.rename(out)  # all trials appear at once
        else:  # an earlier export: each trial folder is replaced whole
            for folder in sorted(tmp.iterdir()):
                dest = out / folder.name
                if dest.exists():
                    old = tmp / f".old-{folder.name}"
                    dest.rename(old)
                folder.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {n: [out / f.resolve().relative_to(tmp) for f in fs] for n, fs in files.items()}


def _export(spec, number: int, out: Path, *, onnx: bool) -> list[Path]:
    """Download the trial's ``model/`` artifacts from MLflow; add an ONNX file next to a real checkpoint."""
    from ..tracking.runs import download_model

    files = download_model(spec, number, out / f"trial-{number:04d}")
    pt = next((f for f in files if f.name == "pruned.pt"), None)
    if onnx and pt is not None and not any(f.suffix == ".onnx" for f in files):  # an int8 trial shipped its own
        files.append(_onnx(pt, spec.imgsz))
    return files


def _onnx(checkpoint: Path, imgsz: int) -> Path:
    """The project's ONNX export (BN-fused, ``output0`` as the official export), checked with onnxruntime, at
    the size the trial ran at (its checkpoint says; ``imgsz``, the study's, for one that does not)."""
    from ..deploy.export import export_onnx
    from ..yolo.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    size = int(ck.meta.get("orchestrator_imgsz", imgsz))
    out = checkpoint.with_name(f"{checkpoint.stem}-{size}.onnx")
    return export_onnx(ck.model.float().eval(), out, imgsz=size).path
