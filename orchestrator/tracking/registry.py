"""A trial's deployable model as a new version in the MLflow Model Registry, logged from the trial's own run.

Why the registry: it is where deployment tooling (``mlflow models serve``, a CD job reading ``models:/NAME/3``)
looks for a model, with a version number, the run that made it, tags to filter on and a description to read.
The ONNX file goes through MLflow's ONNX flavor (``mlflow.onnx.load_model`` gives it back, with its input
signature); the official-layout checkpoint travels beside it in the same model folder, for a user who fine-tunes
on. The caller reads the ONNX file (tracking never imports onnx) and hands over its proto and shapes.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..study.spec import StudySpec
from .runs import client, trial_run_id


@dataclass(frozen=True)
class TensorShape:
    """A named float32 tensor of the model's signature; ``None`` for a dimension the file leaves free."""

    name: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Registered:
    """The version made: ``models:/NAME/VERSION`` loads it; ``run_id`` is the trial run it was logged from."""

    name: str
    version: int
    run_id: str
    model_uri: str


def register_onnx(
    spec: StudySpec,
    number: int,
    name: str,
    *,
    onnx_model: Any,
    inputs: TensorShape,
    outputs: TensorShape,
    checkpoint: Path | None,
    tags: Mapping[str, str],
    description: Callable[[int], str],
) -> Registered:
    """Log ``onnx_model`` (an ``onnx.ModelProto``) into trial ``number``'s run and register it as a new version
    of ``name``; ``checkpoint`` rides along in the model folder; ``description(version)`` becomes the version's
    description (the model card names its own version)."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    c = client(spec)
    run_id = trial_run_id(spec, number, c)

    def spec_of(t: TensorShape) -> Schema:
        return Schema([TensorSpec(np.dtype(np.float32), tuple(-1 if d is None else d for d in t.shape), t.name)])

    signature = ModelSignature(inputs=spec_of(inputs), outputs=spec_of(outputs))
    with _tracking_uri(spec.tracking.uri), _quiet_mlflow():
        info = mlflow.onnx.log_model(
            onnx_model,
            name="onnx",
            signature=signature,
            registered_model_name=name,
            extra_files=[str(checkpoint)] if checkpoint is not None else None,
            run_id=run_id,  # the trial's own run, left as it was (no start_run: its status and end time stay)
        )
    version = int(info.registered_model_version)
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, v)
    c.update_model_version(name, str(version), description=description(version))
    return Registered(name, version, run_id, f"models:/{name}/{version}")


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent ``log_model`` reads the process's tracking URI: the study's for the call, then back."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow announces each registration on stderr (print and logging); the command prints its own one line.
    Errors still raise."""
    log = logging.getLogger("mlflow")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        log.setLevel(level)
