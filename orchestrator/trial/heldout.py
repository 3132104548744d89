"""``pareto --test``: the front and the uniform baselines on the held-out split, on demand.

Figures a trial sealed while it ran (holdout.py) are used as they are. A chosen trial without them (the
study ran before its data had a ``test:`` split) is validated now, once, from the checkpoint its MLflow run
keeps. Either way the figures are written to the trial's MLflow run as ``test_map50_95``/``test_map50``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import OrchestratorError
from ..study.spec import StudySpec


def validate_on_test(spec: StudySpec, numbers: list[int], fetch: Callable[[int, Path], list[Path]]) -> dict:
    """Trial number -> held-out figures for trials that sealed none; ``fetch(n, folder)`` downloads a checkpoint."""
    if not numbers:
        return {}
    from ..assets import local_ref, resolve_data
    from ..yolo.checkpoint import load_model
    from ..yolo.data import load_data_config, scan_labels
    from ..yolo.train import VAL_BATCH
    from ..yolo.val import ValSet, val_stride, validate

    ref = spec.test_data or spec.data  # test_data: its test:, else its val: split; data: its test: split
    data = load_data_config(resolve_data(local_ref(ref, spec.path.resolve().parent)), need=())
    files = (data.test or data.val) if spec.test_data else data.test
    if not files:
        raise OrchestratorError(f"{data.file}: no test split: add `test:` (images no selection has seen) for --test")
    images = scan_labels(files, data.nc)
    out: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="front-test-") as tmp:
        for n in numbers:
            pt = next((f for f in fetch(n, Path(tmp)) if f.name == "pruned.pt"), None)
            if pt is None:
                raise OrchestratorError(f"trial {n}: no pruned.pt among its MLflow artifacts")
            model = load_model(pt)
            vs = ValSet(images, spec.imgsz, VAL_BATCH, stride=val_stride(model), nc=data.nc)
            r = validate(model, vs, device="cpu")
            out[n] = {"test_map50_95": float(r.map50_95), "test_map50": float(r.map50), "test_images": float(r.images)}
    return out


def log_test(spec: StudySpec, figures: dict[int, dict[str, float]]) -> None:
    """Write the figures to each trial's MLflow run (found by its study and trial-number tags)."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    c = MlflowClient(spec.tracking.uri)
    exp = c.get_experiment_by_name(spec.experiment)
    if exp is None:
        return
    ts = int(time.time() * 1000)
    for n, metrics in sorted(figures.items()):
        flt = f"tags.role = 'trial' and tags.study = '{spec.name}' and tags.trial_number = '{n}'"
        for run in c.search_runs([exp.experiment_id], flt):
            c.log_batch(run.info.run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()])
