"""Checks of a study's inputs that need no run: weights and data can be found, groups exist.

Nothing here writes a file, starts Ray or opens a storage, and only :func:`check_for_run` (the run's one check)
downloads: ``orchestrator check`` must leave no trace (the label scan's cache lives in the user cache folder,
which the workers read back). Problems are reported together as one ConfigError with their key paths, so
``orchestrator run`` stops before it creates a study, a run or a file. A local weights file must open as a
checkpoint; a local dataset must resolve and its labels must fit the data yaml's classes: a class id outside
0..nc-1 stops the study (the yaml does not describe these labels), other unusable images are listed as warnings,
never skipped silently.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..assets.locations import local_ref
from ..errors import ConfigError, OrchestratorError
from ..urls import mask_url
from .spec import StudySpec

if TYPE_CHECKING:
    from ..yolo.data import DataConfig


def find_weights(ref: str) -> tuple[Path | None, str]:
    """(local file or None, how it will be obtained) without downloading: the resolver's own lookup."""
    from ..assets import locate_weights
    from ..assets.locations import OFFICIAL_WEIGHTS, is_url

    try:
        found, _ = locate_weights(ref)
    except OrchestratorError as e:
        raise ValueError(_reason(e)) from None
    if found is not None:
        return found, str(found)
    if not is_url(ref) and Path(ref).name in OFFICIAL_WEIGHTS:
        return None, f"official {Path(ref).name}, downloaded at the first run"
    return None, f"downloaded from {mask_url(ref)} at the first run"


def find_data(ref: str) -> str:
    """The data yaml a study will use (a shipped one is named as such), without downloading."""
    from ..assets import locate_data

    try:
        found, shipped = locate_data(ref)
    except OrchestratorError as e:
        raise ValueError(_reason(e)) from None
    if shipped is not None:
        return f"shipped {shipped.name} (its dataset is downloaded at the first run if missing)"
    return str(found)


def _reason(e: OrchestratorError) -> str:
    """The resolver's message without its leading ``<ref>: `` (the caller names the key and the value)."""
    return str(e).partition(": ")[2] or str(e)


def check_stores(spec: StudySpec) -> None:
    """Refuse a store that cannot keep the study (in memory, one SQLite file for both, damaged or read-only),
    before Ray, a study or a run exists: nothing is opened but read-only."""
    from .stores import check_writable_store

    problems = _store_problems(spec)
    for key, url in (("storage", spec.storage), ("tracking.uri", spec.tracking.uri)):
        try:
            check_writable_store(url)
        except OrchestratorError as e:
            problems.append((key, str(e)))
    if problems:
        raise ConfigError(str(spec.path), problems)


def _store_problems(spec: StudySpec) -> list[tuple[str, str]]:
    """Stores that cannot keep the study: in memory (gone at exit), or one SQLite file for Optuna and MLflow."""
    from .stores import in_memory, same_store_file

    problems = []
    for key, url in (("storage", spec.storage), ("tracking.uri", spec.tracking.uri)):
        if in_memory(url):
            problems.append(
                (key, f"{mask_url(url)} is an in-memory database: the study's record would vanish at exit; give a file")
            )
    shared = same_store_file(spec.storage, spec.tracking.uri)
    if shared is not None:
        problems.append(
            (
                "tracking.uri",
                f"{shared} is also the Optuna storage: Optuna and MLflow each need a database file of their own "
                "(the defaults are mlruns/optuna.db and mlruns/mlflow.db)",
            )
        )
    return problems


def check_inputs(spec: StudySpec, *, groups: bool = True) -> dict[str, Any]:
    """Validate stores, weights, data and per-group bounds; return what was found (for ``orchestrator check``)."""
    check_stores(spec)
    found, weights = _locate(spec)
    return _scan(spec, found, weights, groups)


def check_for_run(spec: StudySpec, *, allow_large: bool = False) -> list[str]:
    """Check a study's inputs once before ``orchestrator run`` creates anything; returns warnings to show.

    Every lookup problem is reported before anything downloads; then what is not local yet is fetched (offline
    fails here in one line, before Ray, a study or a run exists) and the labels are scanned, a dataset fetched
    just now included. A fake trial needs only its stores.
    """
    check_stores(spec)
    if spec.trial != "real":
        return []
    from ..assets import resolve_data, resolve_weights

    found, weights = _locate(spec)
    local = _scan(spec, found, weights, groups=False)  # what is here is checked (key paths) before any download
    if weights is not None and "warnings" in local:  # weights and labels both local: checked once, done
        return list(local["warnings"])
    base = spec.path.resolve().parent
    resolve_weights(local_ref(spec.model, base))
    resolve_data(local_ref(spec.data, base), allow_large=allow_large)
    found, weights = _locate(spec)  # what was just fetched is local now: its path, not "downloaded at ..."
    return list(_scan(spec, found, weights, groups=False).get("warnings", ()))


def _locate(spec: StudySpec) -> tuple[dict[str, Any], Path | None]:
    """Where the weights and data are (nothing downloaded); every lookup problem raised at once."""
    base = spec.path.resolve().parent
    problems: list[tuple[str, str]] = []
    found: dict[str, Any] = {"storage": mask_url(spec.storage), "tracking": mask_url(spec.tracking.uri)}
    weights = None
    if spec.trial == "real":
        try:
            weights, found["model"] = find_weights(local_ref(spec.model, base))
        except ValueError as e:
            problems.append(("model", f"{mask_url(spec.model)}: {mask_url(str(e), spec.model)}"))
        try:
            found["data"] = find_data(local_ref(spec.data, base))
        except ValueError as e:
            problems.append(("data", f"{mask_url(spec.data)}: {mask_url(str(e), spec.data)}"))
        if spec.test_data:
            try:
                found["test_data"] = find_data(local_ref(spec.test_data, base))
            except ValueError as e:
                problems.append(("test_data", f"{mask_url(spec.test_data)}: {mask_url(str(e), spec.test_data)}"))
    if problems:
        raise ConfigError(str(spec.path), problems)
    return found, weights


def _scan(spec: StudySpec, found: dict[str, Any], weights: Path | None, groups: bool) -> dict[str, Any]:
    """Open what :func:`_locate` found: the data yaml, the checkpoint's classes, the labels, the groups."""
    problems: list[tuple[str, str]] = []
    if spec.trial == "real":
        data = Path(found["data"])
        try:  # the data yaml first (bounded, milliseconds): a hostile one is refused before the weights are opened
            cfg = read_dataset(data) if data.is_file() else None
        except OrchestratorError as e:
            raise ConfigError(str(spec.path), [("data", str(e))]) from None
        nc = None
        if weights is not None:
            try:
                nc = checkpoint_classes(weights)
            except OrchestratorError as e:
                problems.append(("model", str(e)))
        if cfg is not None:
            try:
                found["warnings"] = scan_dataset(cfg, nc)
            except OrchestratorError as e:
                problems.append(("data", str(e)))
            try:
                found["warnings"] = [*found.get("warnings", ()), *_held_out_leaks(spec, found, cfg)]
            except OrchestratorError as e:
                problems.append(("test_data" if spec.test_data else "data", str(e)))
    if weights is not None and not problems:  # the checkpoint opened: its C3 blocks can be counted
        problems += depth_problems(weights, spec)
    if problems:
        raise ConfigError(str(spec.path), problems)
    if groups and weights is not None:
        names = model_groups(weights, spec)
        found["groups"] = len(names)
        for gb in spec.pruning.groups:
            if not any(fnmatch.fnmatchcase(g, gb.pattern) for g in names):
                problems.append(
                    (f"pruning.groups.{gb.pattern}", f"matches no group; the groups are: {', '.join(names)}")
                )
        if problems:
            raise ConfigError(str(spec.path), problems)
    return found


def _held_out_leaks(spec: StudySpec, found: dict[str, Any], cfg: DataConfig) -> list[str]:
    """Refuse a held-out split that is the study's train or val split; warnings for one that overlaps them."""
    from ..errors import DataError
    from .leaks import check_held_out, held_out_split

    test_cfg = None
    if spec.test_data:
        test_yaml = Path(found["test_data"])
        test_cfg = read_dataset(test_yaml, need=()) if test_yaml.is_file() else None
        if test_cfg is None:
            return []  # still to download: the first trial fetches it, `check` has nothing to compare yet
        if test_cfg.names != cfg.names:
            raise DataError(f"{test_cfg.file}: its classes differ from {cfg.file}'s")
    files, source = held_out_split(cfg, test_cfg)
    return check_held_out(files, source, cfg)


def model_groups(weights: Path, spec: StudySpec) -> list[str]:
    """Group names of the checkpoint at the study's granularity (CPU only; nothing is written)."""
    from ..prune.layers import prunable_groups
    from ..yolo.checkpoint import load_model

    model = load_model(weights)
    method = "structured" if spec.pruning.method == "structured" else "unstructured"
    try:
        return list(prunable_groups(model, spec.pruning.granularity, spec.pruning.exclude, method=method))
    except OrchestratorError as e:
        raise ConfigError(str(spec.path), [("pruning.exclude", str(e))]) from None


def depth_problems(weights: Path, spec: StudySpec) -> list[tuple[str, str]]:
    """``pruning.depth`` against the checkpoint's C3 blocks: a model without one, or fewer bottlenecks than the
    most a trial (or a baseline, ``baselines.depth``) would drop. Nothing is loaded for a study without depth."""
    depth = spec.space.get("depth")
    most = max(int(depth.high) if depth is not None else 0, int(spec.baselines.values.get("depth", 0)))
    if most == 0:
        return []
    from ..prune.depth import c3_blocks
    from ..yolo.checkpoint import load_model

    blocks = c3_blocks(load_model(weights))
    have = sum(b.bottlenecks for b in blocks)
    key = "baselines.depth" if depth is None or spec.baselines.values.get("depth", 0) > depth.high else "pruning.depth"
    if not blocks:
        return [(key, f"{weights.name} has no C3 blocks, so no bottleneck to drop: leave depth out")]
    if most > have:
        return [(key, f"{most} bottlenecks to drop, but {weights.name} has {have} in its C3 blocks")]
    return []


def checkpoint_classes(weights: Path) -> int:
    """Open the weights as the trials will (the allow-listed loader) and return the classes it predicts."""
    from ..yolo.checkpoint import load_checkpoint

    return int(load_checkpoint(weights).model.nc)


def read_dataset(data_yaml: Path, need: tuple[str, ...] = ("train", "val")) -> DataConfig | None:
    """The resolved data yaml (DataError if unusable, or if a split of ``need`` is missing); None for a dataset
    still to download (the first trial fetches it: nothing to scan yet)."""
    from ..assets.datasets import dataset_root
    from ..bounded_yaml import YamlRefused, read_yaml
    from ..errors import DataError
    from ..yolo.data import load_data_config

    try:
        cfg = load_data_config(data_yaml, need=need)
    except DataError as e:
        try:
            doc = read_yaml(data_yaml)
        except YamlRefused:
            raise e from None  # load_data_config's message says where the YAML breaks
        if isinstance(doc, dict) and doc.get("download") and not dataset_root(data_yaml, doc).is_dir():
            return None
        raise
    return cfg


def scan_dataset(
    cfg: DataConfig, nc: int | None, splits: tuple[str, ...] = ("val", "train"), *, count_line: bool = True
) -> list[str]:
    """Raise DataError if the labels do not fit the model's ``nc`` classes; warnings for images to be skipped.

    ``check``, ``run``, ``val`` (``splits=("val",)``) and ``finetune`` all read data through this, so the same
    data gets the same verdict from each. Besides the count of problems (left out with ``count_line=False``
    by ``val``, which names up to five itself): a label file two images share, and a val split without one
    labelled object (every mAP on it is 0, whatever the model)."""
    from ..errors import DataError
    from ..yolo.labels import SHARED_LABEL, scan_labels

    if nc is not None and nc != cfg.nc:
        raise DataError(f"{cfg.file}: nc: the model predicts {nc} classes but the data yaml has {cfg.nc}")
    warnings = []
    for split in splits:
        images = getattr(cfg, split)
        found = scan_labels(images, cfg.nc)
        wrong_class = [p for p in found.problems if " is not an integer in 0.." in p]
        if wrong_class:
            raise DataError(
                f"{cfg.file}: {split}: {len(wrong_class)} label lines have a class id outside 0..{cfg.nc - 1} "
                f"(nc={cfg.nc}), first: {wrong_class[0]}; fix the labels or names/nc"
            )
        if not found.files:
            raise DataError(
                f"{cfg.file}: {split}: no usable images ({len(found.problems)} problems, first: "
                f"{found.problems[0] if found.problems else 'none'})"
            )
        shared = [p for p in found.problems if f": {SHARED_LABEL} " in p]
        others = [p for p in found.problems if f": {SHARED_LABEL} " not in p]
        skipped = len(images) - len(found.files)
        if others and count_line:
            warnings.append(
                f"{cfg.file}: {split}: {len(others)} data problems, {skipped} of {len(images)} images "
                f"skipped; first: {others[0]}"
            )
        if shared:
            more = f" ({len(shared)} such files; first shown)" if len(shared) > 1 else ""
            warnings.append(f"{cfg.file}: {split}: {shared[0]}{more}")
        if split == "val" and found.instances == 0:
            warnings.append(
                f"{cfg.file}: val: none of its {len(found.files)} usable images has a labelled object: "
                "every mAP on it is 0, whatever the model"
            )
    return warnings
