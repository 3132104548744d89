"""The tracking store as a server and as folders: whether it can be used at all, where a trial's files wait while
it cannot, and which checkpoints an earlier store left on disk.

Apart from the tracker because none of it needs a client: the checks run before MLflow is imported, and the
staged files outlive any one connection.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from pathlib import Path

from ..errors import OrchestratorError
from ..study.spec import StudySpec
from ..urls import mask_url


def preflight(spec: StudySpec) -> None:
    """Fail in one line before any trial if the tracker or the artifact folder cannot be used."""
    uri = spec.tracking.uri
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as r:
                r.read()
        except Exception as e:
            raise OrchestratorError(
                f"the MLflow tracking server {mask_url(uri)} does not answer ({mask_url(str(e), uri)[:120]}): "
                "start it or fix tracking.uri"
            ) from None
    elif uri.startswith("sqlite:///"):
        _writable(Path(uri[len("sqlite:///") :]).parent, "tracking.uri")
    if local_artifacts(spec):
        _writable(Path(spec.tracking.artifact_location), "tracking.artifact_location")


def _writable(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OrchestratorError(f"{key}: cannot write to {folder} ({e.strerror or e}): fix its permissions") from None


def local_artifacts(spec: StudySpec) -> bool:
    """True when the artifacts are plain folders on this machine (a local store, no artifact server)."""
    loc = spec.tracking.artifact_location
    return not spec.tracking.uri.startswith(("http://", "https://", "databricks")) and "://" not in loc


def staging_dir(spec: StudySpec) -> Path:
    """Where trial files wait until they are logged (kept while the tracker is unreachable)."""
    return Path(spec.tracking.artifact_location).parent / "staging" / spec.name


def drop_staged(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def trial_marker(uid: str, number: int) -> str:
    """The ``trial.json`` a trial's run keeps beside its checkpoint, so a rebuilt store can find it again."""
    return json.dumps({"uid": uid, "trial": number})


def artifacts_left(spec: StudySpec, uid: str, number: int) -> Path | None:
    """The ``model/`` folder an earlier run of this trial left in the local artifact store, if any.

    After ``mlflow.db`` is lost the runs are rebuilt from the Optuna storage with new run ids; their
    checkpoints are still on disk under the old ids, each run marked by its ``trial.json``.
    """
    if not local_artifacts(spec) or not uid:
        return None
    root = Path(spec.tracking.artifact_location) / spec.experiment
    want = {"uid": uid, "trial": number}
    for marker in root.glob("*/artifacts/trial.json"):
        try:
            found = json.loads(marker.read_text()) == want
        except (OSError, ValueError):
            continue
        model = marker.parent / "model"
        if found and model.is_dir() and any(model.iterdir()):
            return model
    return None
