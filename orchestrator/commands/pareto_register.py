"""``orchestrator pareto STUDY --register NAME [--trial N | --pick RULE]``: a chosen trial into the Model Registry.

A part of ``pareto`` (its flags, its study), kept in its own module because it is its own job: choose one trial,
fetch its files as ``--export`` does, log the ONNX file with MLflow's ONNX flavor into the trial's run, and make
it a new version of NAME with tags and a model card.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # what a models:/NAME/VERSION URI holds unquoted


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--register",
        metavar="NAME",
        default=None,
        help="register a trial's ONNX model (with its .pt beside it) as a new version of NAME in the MLflow Model "
        "Registry, from the trial's own run, with tags and a model card; choose it with --trial or --pick",
    )
    p.add_argument("--trial", type=int, default=None, help="with --register: the trial number")
    p.add_argument(
        "--pick",
        metavar="RULE",
        default=None,
        help='with --register: the front trial a rule chooses, e.g. "max ort_speedup where map50_95 >= 0.9 * '
        'baseline" (max|min METRIC [where METRIC OP VALUE [and ...]]; VALUE a number or NUMBER * baseline)',
    )


def wants_register(args: argparse.Namespace) -> bool:
    return args.register is not None or args.trial is not None or args.pick is not None


def run(args: argparse.Namespace, fetch: Callable[[Any, int, Path], list[Path]]) -> int:
    """Register the chosen trial; ``fetch(spec, number, folder)`` gives its files as ``pareto --export`` does
    (a .pt and an ONNX file exported from it, or the int8 file the trial shipped)."""
    name = _check_args(args)
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line follows, not progress bars
    from ..search import STUDY_BASELINE, load_existing, metrics_of, pareto_front, revealed, trial_summary
    from ..study.file import load_study_spec

    spec = load_study_spec(args.study)
    study = load_existing(spec)
    trials = study.get_trials(deepcopy=False)
    baseline = (study.user_attrs.get(STUDY_BASELINE) or {}).get("metrics", {})
    test = revealed(trials, spec.directions)
    if args.pick is not None:
        from ..search.pick import parse_rule, pick

        rule = parse_rule(args.pick)
        front = sorted(pareto_front(trials, spec.directions), key=lambda t: t.number)
        number = pick(rule, [(t.number, {**metrics_of(t), **test.get(t.number, {})}) for t in front], baseline)
        chosen = f'--pick "{rule}"'
    else:
        number, chosen = _check_trial(trials, args.trial, spec.name), f"--trial {args.trial}"
    trial = next(t for t in trials if t.number == number)
    summary = trial_summary(trial)
    with tempfile.TemporaryDirectory(prefix="register-") as tmp:
        files = fetch(spec, number, Path(tmp))
        onnx_file = next((f for f in files if f.suffix == ".onnx"), None)
        pt = next((f for f in files if f.name == "pruned.pt"), None)
        if onnx_file is None:
            raise OrchestratorError(f"trial {number}: no ONNX file and no checkpoint to export one from")
        registered, quantization = _register(spec, args, number, name, summary, baseline, test, onnx_file, pt, chosen)
    figures = summary["metrics"]
    out = {
        "study": spec.name,
        "trial": number,
        "name": registered.name,
        "version": registered.version,
        "model_uri": registered.model_uri,
        "run_id": registered.run_id,
        "quantization": quantization,
        "metrics": figures,
        "test": test.get(number),
    }
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    shown = [f"{k} {figures[k]:.4g}" for k in ("map50_95", "ort_speedup", "size_mb") if _num(figures.get(k))]
    if _num(figures.get("map50_95")) and _num(baseline.get("map50_95")) and baseline["map50_95"]:
        shown[0] += f" ({figures['map50_95'] / baseline['map50_95']:.2f}x the unpruned model's)"
    print(
        f"registered trial {number} of {spec.name} as {registered.model_uri} (ONNX {quantization}"
        f"{', pruned.pt beside it' if pt else ''}; run {registered.run_id}): {', '.join(shown)}"
    )
    return 0


def _num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_args(args: argparse.Namespace) -> str:
    if args.register is None:
        flag = "--trial" if args.trial is not None else "--pick"
        raise OrchestratorError(f"{flag}: only with --register NAME (the model to register the trial as)")
    if (args.trial is None) == (args.pick is None):
        raise OrchestratorError("--register: give exactly one of --trial N or --pick RULE")
    if args.export or args.test:
        raise OrchestratorError("--register: run --export and --test as their own pareto commands")
    if not _MODEL_NAME.match(args.register):
        raise OrchestratorError(
            f"--register: {args.register!r} is not a model name: letters, digits, '_', '.', '-' (up to 128), "
            "starting with a letter or digit"
        )
    return args.register


def _check_trial(trials: list, number: int, study: str) -> int:
    from ..search import is_screened, state_of

    t = next((t for t in trials if t.number == number), None)
    if t is None:
        last = f"0..{max(t.number for t in trials)}" if trials else "none yet"
        raise OrchestratorError(f"--trial {number}: no such trial in study {study!r} (trials: {last})")
    if t.state.name != "COMPLETE" or is_screened(t):
        raise OrchestratorError(
            f"--trial {number}: the trial is {state_of(t)}; only a finished, fine-tuned trial has a model to register"
        )
    return number


def _register(spec, args, number, name, summary, baseline, test, onnx_file: Path, pt: Path | None, chosen: str):
    """Log and register the files; (the version made, the quantization)."""
    import onnx

    from ..tracking.model_card import CardInputs, model_card
    from ..tracking.registry import register_onnx

    proto = onnx.load(str(onnx_file))
    weights = {i.name for i in proto.graph.initializer}  # old exports list them among the inputs too
    image = next(i for i in proto.graph.input if i.name not in weights)
    inputs, outputs = _shape(image), _shape(proto.graph.output[0])
    quantization = "int8" if onnx_file.name.endswith(".int8.onnx") else "float32"
    figures = {**summary["metrics"], **(test.get(number) or {})}
    tags = {
        "study": spec.name,
        "trial": str(number),
        "origin": summary["origin"],
        "imgsz": str(spec.imgsz),
        "quantization": "int8" if quantization == "int8" else "none",  # the study's quantize values
        "data": spec.data,
        "base_model": spec.model,
    }
    for key, tag in (("map50_95", "val_map50_95"), ("map50", "val_map50"), ("test_map50_95", "test_map50_95"),
                     ("test_map50", "test_map50"), ("ort_speedup", "ort_speedup"), ("speedup", "speedup"),
                     ("size_mb", "size_mb"), ("nonzero_params", "nonzero_params"), ("gflops", "gflops")):  # fmt: skip
        if isinstance(figures.get(key), int | float):
            tags[tag] = f"{figures[key]:.6g}"
    study_file = shlex.quote(str(spec.path))
    card = CardInputs(
        name=name,
        summary=summary,
        baseline=baseline,
        test=test.get(number),
        input_shape=inputs.shape,
        output_shape=outputs.shape,
        quantization=quantization,
        checkpoint=pt.name if pt else None,
        commands=(
            f"orchestrator run {study_file}   # the study: seeded, the same trials come back",
            f"orchestrator pareto {study_file} --register {name} {chosen}",
        ),
    )
    registered = register_onnx(
        spec, number, name, onnx_model=proto, inputs=inputs, outputs=outputs, checkpoint=pt, tags=tags,
        description=lambda version: model_card(spec, card, version),
    )  # fmt: skip
    return registered, quantization


def _shape(value_info):
    """A graph input or output as a TensorShape: fixed dimensions as numbers, named (dynamic) ones as None."""
    from ..tracking.registry import TensorShape

    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim)
    return TensorShape(value_info.name, dims)
