"""Every metric name the program knows, declared once: objectives, what a trial returns, epochs, summaries, held-out.

The spec checks objectives and constraints against :data:`OBJECTIVES`; the runner contract holds both trials to
:data:`TRIAL_METRICS` and :data:`EPOCH_KEYS`; the tracker, ``status`` and the Pareto page show
:data:`SUMMARY_METRICS` and the held-out twins :data:`TEST_METRICS`. A new metric is added here, then measured
by the trial.
"""

from __future__ import annotations

# metric -> the direction in which it gets better; the objectives (and constraints) a study may name
OBJECTIVES: dict[str, str] = {
    "map50_95": "maximize",
    "map50": "maximize",
    "params": "minimize",
    "nonzero_params": "minimize",
    "size_mb": "minimize",
    "size_zip_mb": "minimize",
    "gflops": "minimize",
    "latency_ms": "minimize",
    "speedup": "maximize",
    "ort_latency_ms": "minimize",  # ONNX Runtime (the deployed runtime); latency_ms/speedup are eager PyTorch
    "ort_speedup": "maximize",
}
# the ONNX Runtime latencies: a study after one of them gets the warm start ranked by measured ms (prune/latency.py)
LATENCY_OBJECTIVES = ("ort_speedup", "ort_latency_ms")
QUALITY = "map50_95"  # the accuracy every cost is plotted against
QUALITY_METRICS = ("map50_95", "map50")  # the objectives that are accuracies; every other objective is a cost
# the costs a trial knows at its cut, before any fine-tune (weights kept; the architecture's FLOPs): early stopping
# compares a trial with others only on these (latency and file size are measured after the fine-tune)
CUT_COSTS = ("params", "nonzero_params", "gflops")
ONESHOT = "oneshot_map50_95"  # the cut model's mAP50-95 before fine-tuning, when the study screens (screen:)
# what a trial stopped by the screen returns: its one-shot scores and weight counts (no fine-tune, no latency)
SCREEN_METRICS = ("map50_95", "map50", "params", "nonzero_params", "sparsity")
# what every trial returns, real or fake (the objectives, and the sparsity of its weights)
TRIAL_METRICS: tuple[str, ...] = (*OBJECTIVES, "sparsity")
EPOCH_KEYS = ("box", "obj", "cls", "lr", "map50_95", "map50")  # each fine-tune epoch's record, at least these
SUMMARY_METRICS = ("map50_95", "params", "gflops")  # shown beside the objectives (CSV, the MLflow runs view)
HELD_OUT = ("map50_95", "map50")  # the metrics a trial also measures on the held-out split
TEST_METRICS = tuple(f"test_{m}" for m in HELD_OUT)  # their names there
