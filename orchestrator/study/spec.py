"""A study as frozen dataclasses: each field states its default and its rule once (read by study_file.py).

Past this edge the rest of the program only sees these typed specs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..vocabulary import (
    CACHE_MODES,
    CALIBRATION_METHODS,
    DEFAULT_FLOAT_LAYERS,
    DEFAULT_IMAGES,
    DEFAULT_METHOD,
    DEFAULT_PER_CHANNEL,
    GRANULARITIES,
    IMPORTANCES,
    MAX_IMGSZ,
    METHODS,
    RECOVERY_IMAGES,
)
from ..yolo.hyp import PRESETS  # plain dataclasses: no torch
from .dimensions import Range
from .keys import (
    section_field,
    setting,
)

SAMPLERS = ("gp", "tpe", "nsga2", "random")
# global_magnitude (unstructured): one L1 threshold over all groups; sensitivity (structured): a per-group
# sensitivity scan, then the ratios with the least predicted loss at the uniform cut's GFLOPs
WARM_STARTS = ("none", "global_magnitude", "sensitivity", "latency")
# absolute: one ratio per group in its bounds; relative: one level plus bounded per-group offsets around the
# warm-start allocation at that level (search/relative.py), so every sample perturbs an allocation that works
SPACES = ("absolute", "relative")
DEFAULT_SCREEN = 0.3  # `screen: true`: the floor as a fraction of the unpruned mAP50-95
DEFAULT_STOP_MARGIN = 0.02  # `early_stop: true`: mAP50-95 behind a cheaper trial's at the same epoch
ARTIFACT_POLICIES = ("all", "pareto", "none")
TRIAL_KINDS = ("real", "fake")
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
DEFAULT_TRACKING = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACTS = "mlruns/artifacts"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_SEED = 2**32  # numpy's and Optuna's samplers take seeds in [0, 2^32)
MAX_GRID = 1000  # ratios per group that pruning.step may make (a finer grid is a continuous range)
# Names end up where the stores limit them; measured on mlflow 3.17 and ext4 (tests/study/test_name_limits.py).
# The study name is in an MLflow tag key (the shared view, mlflow.sharedViewState.orchestrator-<name>: keys hold
# at most 250 characters) and a folder name (mlruns/staging/<name>: 255 bytes); the experiment name is the
# artifact folder's name (artifact_location/<experiment>: 255 bytes; MLflow itself takes 500 characters).
MLFLOW_KEY_LIMIT = 250
FILE_NAME_LIMIT = 255
VIEW_TAG_PREFIX = "mlflow.sharedViewState.orchestrator-"  # tracking/links.py: SHARED_VIEW_TAG + share_key(name)
MAX_NAME = min(MLFLOW_KEY_LIMIT - len(VIEW_TAG_PREFIX), FILE_NAME_LIMIT)
MAX_EXPERIMENT = FILE_NAME_LIMIT


@dataclass(frozen=True)
class GroupBounds:
    """Ratio bounds for the groups whose name matches ``pattern`` (fnmatch, e.g. ``model.2*``)."""

    pattern: str
    ratio: Range


def _step_ok(v: float) -> bool:
    return 0 < v < 1


@dataclass(frozen=True)
class PruningSpec:
    method: str = setting("structured", str, choices=METHODS)
    granularity: str = setting("block", str, choices=GRANULARITIES)
    importance: str = setting("l1", str, choices=IMPORTANCES)  # output_error: structured, on train images
    ratio: Range = section_field(Range(0.0, 0.6))
    # ratios on a grid (0.05 -> 0, 0.05, ...): fewer near-duplicate trials
    step: float | None = setting(None, float, check=_step_ok, rule="between 0 and 1")
    groups: tuple[GroupBounds, ...] = section_field(())
    exclude: tuple[str, ...] = setting((), str, many=True)  # layers left alone (Detect's are always left alone)
    # structured: channel counts kept to a multiple of this (tensor-core friendly)
    round_to: int = setting(8, int, check=lambda v: v >= 1, rule=">= 1")
    # structured: one-shot recovery after the cut, before any fine-tune (docs/pruning.md), on train images
    recover: tuple[str, ...] = setting((), str, many=True)
    calib_images: int = setting(RECOVERY_IMAGES, int, check=lambda v: v >= 2, rule=">= 2")


@dataclass(frozen=True)
class FinetuneSpec:
    """The fine-tune's fixed settings; its searched values (epochs, lr0) are dimensions (dimensions.py)."""

    hyp: str = setting("finetune", str, choices=tuple(PRESETS))  # preset name
    # weight of distillation from the unpruned model (its Detect outputs as soft targets); 0 = off
    distill: float = setting(0.0, float, check=lambda v: v >= 0, rule=">= 0")
    overrides: dict[str, Any] = section_field(default_factory=dict)  # hyp keys replaced on the preset


@dataclass(frozen=True)
class QuantizeSpec:
    """How int8 is calibrated (train images); the deployable forms searched are the ``quantize`` dimension."""

    calibration: str = setting(DEFAULT_METHOD, str, choices=CALIBRATION_METHODS)  # ORT calibrator
    calib_images: int = setting(DEFAULT_IMAGES, int, check=lambda v: v >= 1, rule=">= 1")
    # the int8 graph's form (docs/deploy.md): per-tensor weights and the first layer float by default
    per_channel: bool = setting(DEFAULT_PER_CHANNEL, bool)
    float_layers: tuple[int, ...] = setting(DEFAULT_FLOAT_LAYERS, int, many=True)  # model.N kept float


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass(frozen=True)
class Constraint:
    """``metric op value`` where value is ``number`` or ``number * baseline`` (the unpruned model's metric)."""

    text: str
    metric: str
    op: str  # ">=" or "<="
    value: float
    relative: bool  # value is a multiple of the baseline's metric

    def violation(self, metrics: dict[str, float], baseline: dict[str, float]) -> float:
        """Optuna's convention: <= 0 when satisfied, the amount of violation otherwise."""
        bound = self.value * baseline[self.metric] if self.relative else self.value
        got = metrics[self.metric]
        return bound - got if self.op == ">=" else got - bound


def _is_seed(v: int) -> bool:
    return 0 <= v < MAX_SEED


_SEED_RULE = "an integer in [0, 2^32)"


@dataclass(frozen=True)
class SamplerSpec:
    name: str = setting("tpe", str, choices=SAMPLERS)  # why TPE: search.make_sampler
    seed: int = setting(0, int, check=_is_seed, rule=_SEED_RULE)  # the study's seed unless given
    population_size: int = setting(16, int, check=lambda v: v >= 2, rule=">= 2")  # nsga2 only
    # "global_magnitude": after the uniform baselines, enqueue one trial per baseline ratio whose per-group
    # ratios come from one L1 threshold over all groups (same or more weights removed; prune/allocation.py)
    warm_start: str = setting("none", str, choices=WARM_STARTS)
    space: str = setting("absolute", str, choices=SPACES)
    # relative: how far each group may move from the allocation, in ratio (clipped to the group's bounds)
    offset: float = setting(0.15, float, check=lambda v: 0 < v < 1, rule="> 0 and < 1")


@dataclass(frozen=True)
class ScreenSpec:
    """The one-shot screen: a sampler trial whose cut model, validated BEFORE fine-tuning, scores under
    ``min_map`` x the unpruned mAP50-95 stops there (off when None: ``screen: false`` or absent).

    Why a fraction of the baseline: the floor then means the same on any model and dataset. The enqueued uniform
    baselines and warm starts are never screened: they are the reference the searched front is measured against.
    """

    min_map: float | None = setting(None, float, check=lambda v: 0 < v < 1, rule="> 0 and < 1", nullable=True)

    @property
    def on(self) -> bool:
        return self.min_map is not None


@dataclass(frozen=True)
class EarlyStopSpec:
    """Per-epoch early stopping: a sampler trial whose best mAP50-95 after epoch k (k >= ``after``) trails by more
    than ``margin`` what a complete trial at no more cost had reached by its own epoch k stops there (off when
    ``margin`` is None: ``early_stop: false`` or absent).

    Why epoch against epoch: a fine-tune's curve rises, so a trial's third epoch is judged against the third epochs
    of the trials it would have to beat, not against their finals. Why "at no more cost": a cheaper cut is allowed
    to score lower; only a trial that some equal-or-cheaper one already beats, by the margin, has nothing to win.
    The costs must be known at the cut (study.metrics.CUT_COSTS): latency and file size are only measured after
    the fine-tune, so a study ranking those refuses ``early_stop``. The epochs dimension is then a budget.
    """

    margin: float | None = setting(None, float, check=lambda v: 0 <= v < 1, rule=">= 0 and < 1", nullable=True)
    after: int = setting(1, int, check=lambda v: v >= 1, rule=">= 1")  # the first epoch a trial may stop after

    @property
    def on(self) -> bool:
        return self.margin is not None


@dataclass(frozen=True)
class BaselinesSpec:
    """Uniform ratios (one ratio for every group, what the official ``prune()`` does), enqueued first."""

    ratios: tuple[float, ...] = setting((0.1, 0.2, 0.3, 0.4, 0.5), float, many=True)
    # dimension -> the value baselines take instead of the dimension's own choice (dimensions.py: the most
    # epochs, the geometric middle of lr0, the last quantize choice)
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetSpec:
    # completed trials to reach (a resumed study counts what it already has)
    n_trials: int | None = setting(16, int, check=lambda v: v >= 1, rule=">= 1", nullable=True)
    # wall clock for one `orchestrator run`; running trials are finished
    timeout_s: float | None = setting(None, float, check=lambda v: v > 0, rule="> 0")
    # stop after this many failed trials in one run (None = n_trials)
    max_failures: int | None = setting(None, int, check=lambda v: v >= 1, rule=">= 1")


def _is_address(v: str) -> bool:
    return v == "auto" or v.startswith("ray://") or re.fullmatch(r"[\w.\-]+:\d+", v) is not None


@dataclass(frozen=True)
class ResourcesSpec:
    # None = 1 when the cluster has GPUs and device allows, else 0
    gpus_per_trial: float | None = setting(None, float, check=lambda v: v >= 0, rule=">= 0")
    cpus_per_trial: int = setting(1, int, check=lambda v: v >= 1, rule=">= 1")
    max_concurrent: int | None = setting(None, int, check=lambda v: v >= 1, rule=">= 1")  # None = every slot
    # None = start a local Ray; "auto" or "ray://host:port" = join a cluster
    address: str | None = setting(None, str, check=_is_address, rule="auto, host:port or ray://host:port")
    num_cpus: int | None = setting(None, int, check=lambda v: v >= 1, rule=">= 1")  # local Ray only (None = all)


@dataclass(frozen=True)
class CacheSpec:
    """Where a trial worker keeps decoded images: a per-split RAM budget, so memory follows the batch, not the
    dataset (auto: coco128 stays in RAM, COCO streams from disk in the loader's processes; yolo/image_cache.py)."""

    mode: str = setting("auto", str, choices=CACHE_MODES)
    budget_gb: float = setting(2.0, float, check=lambda v: v >= 0, rule=">= 0")


def _scheme(v: str) -> str | None:
    """The URL's scheme without its driver (``postgresql+psycopg2://`` -> postgresql), None if not a URL."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9.\-]*)(?:\+[A-Za-z0-9_]+)?://", v)
    return m[1].lower() if m else None


def _is_storage_url(v: str) -> bool:  # what optuna's RDBStorage and our journal:// open
    return _scheme(v) in ("sqlite", "postgresql", "mysql", "oracle", "mssql", "journal")


def _is_tracking_url(v: str) -> bool:  # MLflow 3.17 has no plain file store
    return _scheme(v) in ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def _is_study_name(v: str) -> bool:
    """A name every store can hold: plain characters (no path, no right-to-left override), short enough for
    MLflow's tag keys and the file system (a longer one passed ``check`` and failed inside ``run``)."""
    return _NAME.fullmatch(v) is not None and len(v) <= MAX_NAME


def _is_experiment_name(v: str) -> bool:
    """The characters ``name:`` takes: MLflow keeps a local experiment's artifacts in
    ``artifact_location/<experiment>``, so a path would escape it and a long name is a folder name too long."""
    return _NAME.fullmatch(v) is not None and len(v) <= MAX_EXPERIMENT


def _is_device(v: str) -> bool:
    return v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v) is not None


@dataclass(frozen=True)
class TrackingSpec:
    uri: str = setting(
        DEFAULT_TRACKING,
        str,
        check=_is_tracking_url,
        rule="an MLflow tracking URI (sqlite, postgresql, mysql, http, https)",
    )
    experiment: str | None = setting(  # None = the study name
        None,
        str,
        check=_is_experiment_name,
        rule=f"letters, digits, '_', '-', '.' (as name:), at most {MAX_EXPERIMENT} characters (its artifact folder's "
        "name under artifact_location), not a path",
    )
    # which trials keep their pruned checkpoint: all | pareto | none
    artifacts: str = setting("pareto", str, choices=ARTIFACT_POLICIES)
    artifact_location: str = setting(DEFAULT_ARTIFACTS, str)  # for local stores; a server decides its own
    # at most one refresh of the Pareto plots per this many seconds
    refresh_s: float = setting(10.0, float, check=lambda v: v >= 0, rule=">= 0")


@dataclass(frozen=True)
class FakeTrialSpec:
    """A trial without tensors, for tests and benchmarks of the study loop (``trial: fake``)."""

    sleep_s: float = setting(0.05, float, check=lambda v: v >= 0, rule=">= 0")
    fail_on: tuple[int, ...] = setting((), int, many=True)  # trial numbers that raise
    nan_on: tuple[int, ...] = setting((), int, many=True)  # trial numbers whose fine-tune diverges
    # trial numbers whose worker process is SIGKILLed on the first attempt
    kill_on: tuple[int, ...] = setting((), int, many=True)
    checkpoint_kb: int = setting(64, int, check=lambda v: v >= 0, rule=">= 0")  # size of the fake checkpoint
    kill_twice: bool = setting(False, bool)  # kill_on also kills the retry


def _imgsz_ok(v: int) -> bool:
    return 32 <= v <= MAX_IMGSZ and v % 32 == 0


@dataclass(frozen=True)
class StudySpec:
    path: Path
    name: str = setting(
        None,
        str,
        required=True,
        check=_is_study_name,
        rule=f"letters, digits, '_', '-', '.', at most {MAX_NAME} characters (MLflow's tag keys hold "
        f"{MLFLOW_KEY_LIMIT}, with the prefix {VIEW_TAG_PREFIX!r})",
    )
    model: str = setting(None, str, required=True)
    data: str = setting(None, str, required=True)
    # a data yaml whose test: (else val:) split is the held-out test (holdout.py)
    test_data: str | None = setting(None, str)
    imgsz: int = setting(640, int, check=_imgsz_ok, rule=f"a multiple of 32 from 32 to {MAX_IMGSZ}")
    batch: int = setting(16, int, check=lambda v: v >= 1, rule=">= 1")
    device: str = setting("auto", str, check=_is_device, rule="auto, cpu, cuda or cuda:N")
    seed: int = setting(0, int, check=_is_seed, rule=_SEED_RULE)
    pruning: PruningSpec = section_field(PruningSpec())
    finetune: FinetuneSpec = section_field(FinetuneSpec())
    quantize: QuantizeSpec = section_field(QuantizeSpec())
    objectives: tuple[Objective, ...] = section_field(
        (Objective("map50_95", "maximize"), Objective("gflops", "minimize"))
    )
    constraints: tuple[Constraint, ...] = section_field(())
    sampler: SamplerSpec = section_field(SamplerSpec())
    screen: ScreenSpec = section_field(ScreenSpec())
    early_stop: EarlyStopSpec = section_field(EarlyStopSpec())
    baselines: BaselinesSpec = section_field(BaselinesSpec())
    budget: BudgetSpec = section_field(BudgetSpec())
    resources: ResourcesSpec = section_field(ResourcesSpec())
    cache: CacheSpec = section_field(CacheSpec())
    storage: str = setting(
        DEFAULT_STORAGE,
        str,
        check=_is_storage_url,
        rule="an Optuna storage URL (sqlite, postgresql, mysql, journal)",
    )
    tracking: TrackingSpec = section_field(TrackingSpec())
    trial: str = setting("real", str, choices=TRIAL_KINDS)
    fake: FakeTrialSpec = section_field(FakeTrialSpec())
    # dimension name -> its domain (a Range or Choices): the searched values besides the ratios (dimensions.py)
    space: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the file as written, logged with the study

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]
