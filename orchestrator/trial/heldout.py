"""The held-out test split: which images it is, and the chosen trials validated on it after the study.

Figures a trial sealed while it ran (search/holdout.py) are used as they are. A chosen trial without them (the
study ran before its data had a ``test:`` split) is validated here, once, from the checkpoint its MLflow run
keeps (``pareto --test``); writing the figures to MLflow is tracking's job (tracking/runs.py), not this one's.
The split is picked by :func:`held_out_files` alone, so a trial and ``pareto --test`` never disagree on it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OrchestratorError
from ..study.spec import StudySpec

if TYPE_CHECKING:
    from ..yolo.data import DataConfig


def held_out_files(
    data: DataConfig, test_data: str | None, base_dir: Path, *, progress: bool = True
) -> tuple[Path, ...]:
    """The held-out images of a loaded data config ``data``: the study's ``test_data`` yaml (its test:, else
    its val: split, with ``data``'s classes), else ``data``'s own test: (empty when it has none)."""
    from ..study.leaks import held_out_split

    if not test_data:
        return held_out_split(data, None)[0]
    from ..assets import local_ref, resolve_data
    from ..yolo.data import load_data_config

    cfg = load_data_config(resolve_data(local_ref(test_data, base_dir), progress=progress), need=())
    if cfg.names != data.names:
        raise OrchestratorError(f"{cfg.file}: test_data's classes differ from {data.file}'s")
    return held_out_split(data, cfg)[0]


def validate_on_test(spec: StudySpec, numbers: list[int], fetch: Callable[[int, Path], list[Path]]) -> dict:
    """Trial number -> held-out figures for trials that sealed none; ``fetch(n, folder)`` downloads a checkpoint."""
    if not numbers:
        return {}
    from ..assets import local_ref, resolve_data
    from ..yolo.checkpoint import load_model
    from ..yolo.data import load_data_config
    from ..yolo.labels import scan_labels
    from ..yolo.train import VAL_BATCH
    from ..yolo.val import ValSet, val_stride, validate

    base = spec.path.resolve().parent
    data = load_data_config(resolve_data(local_ref(spec.data, base)), need=())
    files = held_out_files(data, spec.test_data, base)
    if not files:
        where = spec.test_data or data.file
        raise OrchestratorError(f"{where}: no test split: add `test:` (images no selection has seen) for --test")
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
