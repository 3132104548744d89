"""Study files for the sweep tests: a fake-trial study whose stores all live under one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def fake_study(folder: Path, name: str = "fake", **overrides: Any) -> Path:
    """Write ``folder/<name>.yaml``: fake trials, SQLite Optuna + MLflow stores under ``folder/mlruns``."""
    doc: dict[str, Any] = {
        "name": name,
        "model": "yolov5n.pt",
        "data": "coco128.yaml",
        "trial": "fake",
        "fake": {"sleep_s": 0.05, "checkpoint_kb": 8},
        "pruning": {"granularity": "stage", "ratio": {"max": 0.6}},
        "finetune": {"epochs": {"min": 0, "max": 2}, "lr0": {"min": 0.001, "max": 0.01}},
        "objectives": [{"metric": "map50_95"}, {"metric": "gflops"}],
        "baselines": {"ratios": [0.1, 0.3]},
        "budget": {"n_trials": 6},
        "resources": {"num_cpus": 2},
        "storage": f"sqlite:///{folder}/mlruns/optuna.db",
        "tracking": {
            "uri": f"sqlite:///{folder}/mlruns/mlflow.db",
            "artifact_location": f"{folder}/mlruns/artifacts",
            "refresh_s": 0,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trial_runs(spec) -> dict[int, Any]:
    """trial number -> MLflow run of the study (not its archived runs), failing on duplicates."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(spec.tracking.uri)
    exp = c.get_experiment_by_name(spec.experiment)
    runs = c.search_runs(
        [exp.experiment_id], filter_string=f"tags.role = 'trial' and tags.study = '{spec.name}'", max_results=1000
    )
    out: dict[int, Any] = {}
    for r in runs:
        n = int(r.data.tags["trial_number"])
        assert n not in out, f"trial {n} logged twice"
        out[n] = r
    return out


def tiny_real_study(folder: Path, assets: Path, name: str = "tiny", **overrides: Any) -> Path:
    """A real-trial study small enough for a test: yolov5n on 4 train / 8 val coco128 images at imgsz 64, no
    fine-tune, the uniform 0.3 baseline and one sampled trial (about a minute on 2 idle cores)."""
    from data_subsets import subset_yaml

    data = subset_yaml(assets / "coco128.yaml", folder, train=slice(0, 4), val=slice(4, 12))
    settings: dict[str, Any] = {
        "trial": "real",
        "model": str(assets / "yolov5n.pt"),
        "data": str(data),
        "imgsz": 64,
        "device": "cpu",
        "pruning": {"method": "unstructured", "granularity": "stage"},
        "finetune": {"epochs": 0},
        "objectives": [{"metric": "map50_95"}, {"metric": "nonzero_params"}],
        "baselines": {"ratios": [0.3]},
        "budget": {"n_trials": 2},
        "resources": {"num_cpus": 2, "cpus_per_trial": 2},
    }
    return fake_study(folder, name, **{**settings, **overrides})
