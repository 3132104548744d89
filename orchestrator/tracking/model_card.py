"""The model card of a registered trial: markdown that says how the model was made, what it scores, how to redo it.

Why a card in the version's description: the registry page is what a reviewer of a deployment reads, and tags
alone (numbers without their baseline) do not say whether 0.28 is good. Every figure here comes from the study's
own records (the trial's metrics, the unpruned model's, the held-out split's), next to its ratio to the unpruned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..study.spec import StudySpec

# (metric, label, higher is better): the rows of the figures table, in this order, when the trial reports them
FIGURES = (
    ("map50_95", "mAP50-95 (val)", True),
    ("map50", "mAP50 (val)", True),
    ("test_map50_95", "mAP50-95 (held-out test)", True),
    ("test_map50", "mAP50 (held-out test)", True),
    ("ort_speedup", "ONNX Runtime speed-up", True),
    ("ort_latency_ms", "ONNX Runtime latency (ms)", False),
    ("speedup", "PyTorch speed-up", True),
    ("size_mb", "file size (MB)", False),
    ("nonzero_params", "nonzero weights", False),
    ("params", "weights", False),
    ("gflops", "GFLOPs", False),
    ("sparsity", "sparsity", True),
)


@dataclass(frozen=True)
class CardInputs:
    """What the card reports: the trial's record (``search.trial_summary``), the unpruned model's figures,
    the held-out figures (when revealed), the files' shapes, and the commands that reproduce it."""

    name: str
    summary: Mapping
    baseline: Mapping[str, float]
    test: Mapping[str, float] | None
    input_shape: Sequence[int | None]
    output_shape: Sequence[int | None]
    quantization: str
    checkpoint: str | None  # file name of the official-layout .pt beside the ONNX file
    commands: Sequence[str]


def model_card(spec: StudySpec, card: CardInputs, version: int) -> str:
    """The markdown card of version ``version`` of ``card.name``."""
    s = card.summary
    n = s["number"]
    figures = {**s["metrics"], **(card.test or {})}
    lines = [
        f"# {card.name} v{version}: trial {n} of study `{spec.name}`",
        "",
        f"A YOLOv5 detector pruned from `{spec.model}` by `orchestrator` on `{spec.data}` at imgsz {spec.imgsz}: "
        f"trial {n} ({s['origin']}) of study `{spec.name}` (`{spec.path.name}`), chosen from its Pareto front. "
        f"{_how(spec, s, card.quantization)}",
        "",
        "## Figures",
        "",
        "| figure | this model | unpruned | ratio |",
        "|---|---|---|---|",
    ]
    for key, label, _ in FIGURES:
        v = figures.get(key)
        if not _num(v):
            continue
        base = card.baseline.get(key)
        ratio = f"{v / base:.3f}x" if _num(base) and base else ""
        lines.append(f"| {label} | {_fmt(v)} | {_fmt(base) if _num(base) else ''} | {ratio} |")
    if not card.test:
        lines += ["", "Held-out test: none revealed for this trial (the data has no `test:` split, or run "
                  f"`orchestrator pareto {spec.path} --test`)."]  # fmt: skip
    lines += ["", "## Per-group pruning ratios", "", "| group | ratio |", "|---|---|"]
    lines += [f"| {g} | {r:g} |" for g, r in sorted(s["ratios"].items())] or ["| (none) | |"]
    dims = {k: v for k, v in s["dimensions"].items() if v is not None}
    if dims:
        lines += ["", f"Trial parameters: `{json.dumps(dims, sort_keys=True)}`"]
    shape_in = ", ".join("?" if d is None else str(d) for d in card.input_shape)
    shape_out = ", ".join("?" if d is None else str(d) for d in card.output_shape)
    lines += [
        "",
        "## Files",
        "",
        f"- ONNX ({card.quantization}): input `images` ({shape_in}) float32 RGB in [0, 1], letterboxed; output "
        f"`output0` ({shape_out}): xywh in input pixels, objectness, class scores (run NMS after it).",
    ]
    if card.checkpoint:
        lines.append(
            f"- `extra_files/{card.checkpoint}` beside it: the official YOLOv5 checkpoint layout "
            "(`torch.load(f)['model']`), for fine-tuning on or exporting again."
        )
    lines += [
        "",
        "## Load it",
        "",
        "```python",
        "import mlflow.onnx, onnxruntime",
        f'model = mlflow.onnx.load_model("models:/{card.name}/{version}")',
        "session = onnxruntime.InferenceSession(model.SerializeToString())",
        "```",
        "",
        "## Reproduce it",
        "",
        "```bash",
        *card.commands,
        "```",
    ]
    return "\n".join(lines) + "\n"


def _how(spec: StudySpec, s: Mapping, quantization: str) -> str:
    p = spec.pruning
    epochs = s["dimensions"].get("epochs")
    tune = f"fine-tuned {epochs} epoch(s)" if epochs is not None else "fine-tuned as the study file sets"
    ratios = list(s["ratios"].values())
    mean = f", mean ratio {sum(ratios) / len(ratios):.3f}" if ratios else ""
    return (
        f"{p.method.capitalize()} pruning ({p.importance} importance, {p.granularity} groups{mean}), {tune}, "
        f"quantization: {quantization}."
    )


def _num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) >= 100:
        return f"{int(v):,}"
    return f"{v:.4g}"
