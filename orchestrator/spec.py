"""A study file (``studies/*.yaml``) loaded once into frozen dataclasses.

Every problem is collected with its key path and reported at once in one :class:`ConfigError`
(``studies/x.yaml: pruning.ratio.max: must be < 1, got 1.2``), so a user fixes a file in one pass.
Past this edge the rest of the program only sees typed specs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .bounded_yaml import YamlRefused, read_yaml
from .config_reader import KeyReader, close_match, is_number, show, to_float, unusable
from .errors import ConfigError

# metric -> the direction in which it gets better; the objectives a study may name
METRICS: dict[str, str] = {
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
METHODS = ("structured", "unstructured")
GRANULARITIES = ("layer", "block", "stage")
IMPORTANCES = ("l1", "l2", "bn_scale")  # bn_scale: structured only (BatchNorm gamma)
SAMPLERS = ("nsga2", "tpe", "random")
WARM_STARTS = ("none", "global_magnitude")
QUANTIZE_CHOICES = ("none", "int8")  # none: the fp16 .pt is deployed; int8: an ONNX Runtime int8 QDQ file
ARTIFACT_POLICIES = ("all", "pareto", "none")
TRIAL_KINDS = ("real", "fake")
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
DEFAULT_TRACKING = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACTS = "mlruns/artifacts"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_SEED = 2**32  # numpy's and Optuna's samplers take seeds in [0, 2^32)
MAX_GRID = 1000  # ratios per group that pruning.step may make (a finer grid is a continuous range)
MAX_IMGSZ = 8192  # pixels: one 8192x8192 letterboxed image is 200 MB; far beyond what YOLOv5 is trained at
_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=)\s*(?:(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<mul>\*\s*baseline)?"
    r"|(?P<base>baseline))\s*$"
)


@dataclass(frozen=True)
class Range:
    """A closed interval searched by the sampler; ``low == high`` fixes the value."""

    low: float
    high: float
    log: bool = False

    @property
    def fixed(self) -> bool:
        return self.low == self.high


@dataclass(frozen=True)
class GroupBounds:
    """Ratio bounds for the groups whose name matches ``pattern`` (fnmatch, e.g. ``model.2*``)."""

    pattern: str
    ratio: Range


@dataclass(frozen=True)
class PruningSpec:
    method: str = "structured"
    granularity: str = "block"
    importance: str = "l1"
    ratio: Range = Range(0.0, 0.6)
    step: float | None = None  # ratios on a grid (0.05 -> 0, 0.05, ...): fewer near-duplicate trials
    groups: tuple[GroupBounds, ...] = ()
    exclude: tuple[str, ...] = ()  # layers left alone (the Detect head is always left alone)
    round_to: int = 8  # structured: channel counts kept to a multiple of this (tensor-core friendly)


@dataclass(frozen=True)
class FinetuneSpec:
    epochs: Range = Range(0, 3)  # integers; 0 = no fine-tuning
    lr0: Range = Range(0.001, 0.001)  # the loader fills in the preset's lr0 when the file gives none
    hyp: str = "finetune"  # preset name or path of a hyp yaml
    overrides: dict[str, Any] = field(default_factory=dict)  # hyp keys replaced on top of the preset


@dataclass(frozen=True)
class QuantizeSpec:
    """``quantize``: the deployable forms the search picks from, and how int8 is calibrated (train images)."""

    choices: tuple[str, ...] = ("none",)
    calibration: str = "minmax"  # ORT calibrator: minmax | percentile | entropy (defaults: orchestrator/quantize.py)
    calib_images: int = 128

    @property
    def searched(self) -> bool:
        return self.choices != ("none",)


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


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "nsga2"
    seed: int = 0
    population_size: int = 16  # nsga2 only
    # "global_magnitude": after the uniform baselines, enqueue one trial per baseline ratio whose per-group
    # ratios come from one L1 threshold over all groups (same or more weights removed; prune/allocation.py)
    warm_start: str = "none"


@dataclass(frozen=True)
class BaselinesSpec:
    """Uniform ratios (one ratio for every group, what the official ``prune()`` does), enqueued first."""

    ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    epochs: int | None = None  # None = the largest epochs the search may pick (same fine-tune budget)
    lr0: float | None = None  # None = lr0 if fixed, else the geometric middle of its range


@dataclass(frozen=True)
class BudgetSpec:
    n_trials: int | None = 16  # completed trials to reach (a resumed study counts what it already has)
    timeout_s: float | None = None  # wall clock for one `orchestrator run`; running trials are finished
    max_failures: int | None = None  # stop after this many failed trials in one run (None = n_trials)


@dataclass(frozen=True)
class ResourcesSpec:
    gpus_per_trial: float | None = None  # None = 1 when the cluster has GPUs and device allows, else 0
    cpus_per_trial: int = 1
    max_concurrent: int | None = None  # None = as many as the cluster's slots
    address: str | None = None  # None = start a local Ray; "auto" or "ray://host:port" = join a cluster
    num_cpus: int | None = None  # local Ray only: CPUs it may use (None = all)


@dataclass(frozen=True)
class TrackingSpec:
    uri: str = DEFAULT_TRACKING
    experiment: str | None = None  # None = the study name
    artifacts: str = "pareto"  # which trials keep their pruned checkpoint: all | pareto | none
    artifact_location: str = DEFAULT_ARTIFACTS  # for local stores; a server decides its own
    refresh_s: float = 10.0  # at most one refresh of the Pareto plots per this many seconds


@dataclass(frozen=True)
class FakeTrialSpec:
    """A trial without tensors, for tests and benchmarks of the study loop (``trial: fake``)."""

    sleep_s: float = 0.05
    fail_on: tuple[int, ...] = ()  # trial numbers that raise
    nan_on: tuple[int, ...] = ()  # trial numbers whose fine-tune diverges
    kill_on: tuple[int, ...] = ()  # trial numbers whose worker process is SIGKILLed on the first attempt
    checkpoint_kb: int = 64  # size of the fake checkpoint artifact
    kill_twice: bool = False  # kill_on also kills the retry


@dataclass(frozen=True)
class StudySpec:
    path: Path
    name: str
    model: str
    data: str
    test_data: str | None = None  # a data yaml whose test: (else val:) split is the held-out test (holdout.py)
    imgsz: int = 640
    batch: int = 16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    pruning: PruningSpec = PruningSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    quantize: QuantizeSpec = QuantizeSpec()
    objectives: tuple[Objective, ...] = (Objective("map50_95", "maximize"), Objective("gflops", "minimize"))
    constraints: tuple[Constraint, ...] = ()
    sampler: SamplerSpec = SamplerSpec()
    baselines: BaselinesSpec = BaselinesSpec()
    budget: BudgetSpec = BudgetSpec()
    resources: ResourcesSpec = ResourcesSpec()
    storage: str = DEFAULT_STORAGE
    tracking: TrackingSpec = TrackingSpec()
    trial: str = "real"
    fake: FakeTrialSpec = FakeTrialSpec()
    text: str = ""  # the file as written, logged with the study

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file; raise one ConfigError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("", "study file not found")])
    try:  # duplicate keys, alias bombs, deep nesting and huge files are refused here, in well under a second
        raw = read_yaml(path)
    except YamlRefused as e:
        raise ConfigError(str(path), [("", str(e))]) from None
    return parse_study(raw, path, path.read_text())


def parse_study(raw: Any, path: Path, text: str = "") -> StudySpec:
    """Build a StudySpec from already-parsed YAML (``path`` names the file in messages)."""
    r = KeyReader(str(path), _KNOWN)
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [("", f"must be a mapping of keys, got {type(raw).__name__}")])
    top = r.section(raw, "")
    name = r.take(top, "name", str, required=True)
    if name is not None and not _NAME.fullmatch(name):
        r.bad("name", f"must be letters, digits, '_', '-', '.', got {name!r}")
    model = r.take(top, "model", str, required=True)
    data = r.take(top, "data", str, required=True)
    test_data = r.take(top, "test_data", str, None)
    imgsz = r.take(
        top,
        "imgsz",
        int,
        640,
        check=lambda v: 32 <= v <= MAX_IMGSZ and v % 32 == 0,
        rule=f"a multiple of 32 from 32 to {MAX_IMGSZ}",
    )
    batch = r.take(top, "batch", int, 16, check=lambda v: v >= 1, rule=">= 1")
    device = r.take(top, "device", str, "auto", check=_is_device, rule="auto, cpu, cuda or cuda:N")
    seed = r.take(top, "seed", int, 0, check=_is_seed, rule=_SEED_RULE)
    spec = dict(
        path=path,
        name=name,
        model=model,
        data=data,
        test_data=test_data,
        imgsz=imgsz,
        batch=batch,
        device=device,
        seed=seed,
        pruning=_pruning(r, r.section(top, "pruning")),
        finetune=_finetune(r, r.section(top, "finetune")),
        quantize=_quantize(r, top.pop("quantize", None)),
        objectives=_objectives(r, top),
        sampler=None,
        baselines=_baselines(r, r.section(top, "baselines")),
        budget=_budget(r, r.section(top, "budget")),
        resources=_resources(r, r.section(top, "resources")),
        storage=r.take(
            top,
            "storage",
            str,
            DEFAULT_STORAGE,
            check=_is_storage_url,
            rule="an Optuna storage URL (sqlite, postgresql, mysql, journal)",
        ),
        tracking=_tracking(r, r.section(top, "tracking")),
        trial=r.take(top, "trial", str, "real", choices=TRIAL_KINDS),
        fake=_fake(r, r.section(top, "fake")),
        text=text,
    )
    pr, ft = spec["pruning"], spec["finetune"]
    fixed_q = len(spec["quantize"].choices) == 1
    if pr.ratio.fixed and all(g.ratio.fixed for g in pr.groups) and ft.epochs.fixed and ft.lr0.fixed and fixed_q:
        r.bad(
            "pruning.ratio",
            "the search space is empty (pruning.ratio, finetune.epochs and finetune.lr0 are all fixed): "
            "give one of them {min, max}",
        )
    spec["constraints"] = _constraints(r, top, spec["objectives"])
    spec["sampler"] = _sampler(r, r.section(top, "sampler"), len(spec["objectives"] or ()), seed)
    if spec["sampler"].warm_start != "none" and pr.method != "unstructured":
        warm = spec["sampler"].warm_start
        r.bad("sampler.warm_start", f"{warm} allocates single weights: it needs pruning.method unstructured")
    if spec["sampler"].warm_start != "none" and not spec["baselines"].ratios:
        r.bad("sampler.warm_start", "pairs one allocation with each uniform baseline: baselines.ratios is empty")
    r.done(top, "")
    if r.problems:
        raise ConfigError(str(path), r.problems)
    return StudySpec(**spec)


# ---------------------------------------------------------------- sections


def _pruning(r: KeyReader, d: dict) -> PruningSpec:
    method = r.take(d, "method", str, "structured", choices=METHODS, at="pruning")
    granularity = r.take(d, "granularity", str, "block", choices=GRANULARITIES, at="pruning")
    importance = r.take(d, "importance", str, "l1", choices=IMPORTANCES, at="pruning")
    ratio = _ratio_range(r, d.pop("ratio", None), "pruning.ratio", Range(0.0, 0.6))
    step = r.take(d, "step", float, None, check=lambda v: 0 < v < 1, rule="between 0 and 1", at="pruning")
    groups = []
    raw_groups = d.pop("groups", None) or {}
    if not isinstance(raw_groups, dict):
        r.bad("pruning.groups", f"must map group names (or patterns) to ratio bounds, got {show(raw_groups)}")
        raw_groups = {}
    for pattern, bounds in raw_groups.items():
        if (why := unusable(str(pattern))) is not None:
            r.bad(f"pruning.groups.{pattern}", why.replace("must", "a group pattern must", 1))
            continue
        rng = _ratio_range(r, bounds, f"pruning.groups.{pattern}", None)
        if rng is not None:
            groups.append(GroupBounds(str(pattern), rng))
    exclude = r.take_list(d, "exclude", str, (), at="pruning")
    round_to = r.take(d, "round_to", int, 8, check=lambda v: v >= 1, rule=">= 1", at="pruning")
    if importance == "bn_scale" and method == "unstructured":
        r.bad("pruning.importance", "bn_scale ranks whole channels: use it with method structured, or l1/l2")
    if step is not None and ratio is not None:
        widest = max([ratio.high - ratio.low] + [g.ratio.high - g.ratio.low for g in groups])
        if widest / step + 1 > MAX_GRID:
            r.bad(
                "pruning.step",
                f"{step:g} makes {widest / step + 1:.3g} ratios per group: at most {MAX_GRID} "
                f"(use a step >= {widest / (MAX_GRID - 1):.2g}, or no step for a continuous range)",
            )
    r.done(d, "pruning")
    return PruningSpec(method, granularity, importance, ratio, step, tuple(groups), tuple(exclude), round_to)


def _ratio_range(r: KeyReader, raw: Any, key: str, default: Range | None) -> Range | None:
    """A ratio bound: a number (fixed) or {min, max}; ratios are fractions removed, so 0 <= min <= max < 1."""
    if raw is None:
        if default is None:
            r.bad(key, "missing: give a ratio or {min, max}")
        return default
    if is_number(raw):
        lo = hi = to_float(raw)
        if (why := unusable(lo)) is not None:
            r.bad(key, why)
            return default
    elif isinstance(raw, dict):
        d = dict(raw)
        n = len(r.problems)
        lo = r.take(d, "min", float, default.low if default else 0.0, at=key)
        hi = r.take(d, "max", float, default.high if default else None, required=default is None, at=key)
        r.done(d, key)
        if lo is None or hi is None or len(r.problems) > n:  # a bound refused: never fall back to the default
            return default
    else:
        r.bad(key, f"must be a number or {{min, max}}, got {show(raw)}")
        return default
    ok = True
    for name, v in (("min", lo), ("max", hi)):
        where = f"{key}.{name}" if isinstance(raw, dict) else key
        if v >= 1:
            r.bad(where, f"must be < 1, got {v:g}")
        elif v < 0:
            r.bad(where, f"must be >= 0, got {v:g}")
        ok = ok and 0 <= v < 1
        if not isinstance(raw, dict):
            break
    if ok and lo > hi:
        r.bad(key, f"min <= max must hold, got min={lo:g} max={hi:g}")
        ok = False
    return Range(lo, hi) if ok else default


def _finetune(r: KeyReader, d: dict) -> FinetuneSpec:
    epochs = Range(0, 3)
    raw = d.pop("epochs", None)
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, int | dict):
            r.bad("finetune.epochs", f"must be an integer or {{min, max}}, got {show(raw)}")
        elif isinstance(raw, int):
            if raw >= 0:
                epochs = Range(raw, raw)
            else:
                r.bad("finetune.epochs", f"must be >= 0, got {raw}")
        else:
            e = dict(raw)
            lo = r.take(e, "min", int, 0, check=lambda v: v >= 0, rule=">= 0", at="finetune.epochs")
            hi = r.take(e, "max", int, None, required=True, check=lambda v: v >= 0, rule=">= 0", at="finetune.epochs")
            r.done(e, "finetune.epochs")
            if lo is not None and hi is not None:
                if lo > hi:
                    r.bad("finetune.epochs", f"min <= max must hold, got min={lo} max={hi}")
                else:
                    epochs = Range(lo, hi)
    from .yolo.hyp import PRESETS, Hyp  # plain dataclasses: no torch

    hyp = r.take(d, "hyp", str, "finetune", choices=tuple(PRESETS), at="finetune")
    preset_lr0 = PRESETS[hyp or "finetune"].lr0
    lr0 = Range(preset_lr0, preset_lr0)  # not given: the preset's own (tuned) lr0
    raw = d.pop("lr0", None)
    if raw is not None:
        if is_number(raw):
            if (why := unusable(to_float(raw))) is not None:
                r.bad("finetune.lr0", why)
            elif raw > 0:
                lr0 = Range(to_float(raw), to_float(raw))
            else:
                r.bad("finetune.lr0", f"must be > 0, got {show(raw)}")
        elif isinstance(raw, dict):
            e = dict(raw)
            lo = r.take(e, "min", float, None, required=True, check=lambda v: v > 0, rule="> 0", at="finetune.lr0")
            hi = r.take(e, "max", float, None, required=True, check=lambda v: v > 0, rule="> 0", at="finetune.lr0")
            log = r.take(e, "log", bool, True, at="finetune.lr0")
            r.done(e, "finetune.lr0")
            if lo is not None and hi is not None:
                if lo > hi:
                    r.bad("finetune.lr0", f"min <= max must hold, got min={lo:g} max={hi:g}")
                else:
                    lr0 = Range(lo, hi, bool(log))
        else:
            r.bad("finetune.lr0", f"must be a number or {{min, max}}, got {show(raw)}")
    overrides = d.pop("overrides", None) or {}
    if not isinstance(overrides, dict):
        r.bad("finetune.overrides", f"must map hyp keys to numbers, got {show(overrides)}")
        overrides = {}
    known = {f.name: f.type for f in fields(Hyp)}
    for k, v in list(overrides.items()):
        if k not in known:
            r.bad(f"finetune.overrides.{k}", f"unknown hyp key{close_match(str(k), known)}")
        elif k == "lr0":
            r.bad(f"finetune.overrides.{k}", "set finetune.lr0 instead (it may be searched)")
        elif not (is_number(v) or (isinstance(v, bool) and "bool" in str(known[k]))):
            r.bad(
                f"finetune.overrides.{k}",
                f"must be {'true or false' if 'bool' in str(known[k]) else 'a number'}, got {show(v)}",
            )
        elif is_number(v) and unusable(to_float(v)) is not None:
            r.bad(f"finetune.overrides.{k}", unusable(to_float(v)))
        else:
            continue
        overrides.pop(k)
    r.done(d, "finetune")
    return FinetuneSpec(epochs, lr0, hyp, dict(overrides))


def _quantize(r: KeyReader, raw: Any) -> QuantizeSpec:
    """``quantize: [none, int8]`` (or one choice), or ``{choices: [...], calibration: minmax, calib_images: 128}``."""
    from .quantize import CALIBRATION_METHODS, DEFAULT_IMAGES, DEFAULT_METHOD

    if raw is None:
        return QuantizeSpec()
    d, at, name = (dict(raw), "quantize", "choices") if isinstance(raw, dict) else ({"quantize": raw}, "", "quantize")
    key = f"{at}.{name}" if at else name
    choices = r.take_list(d, name, str, ("none",), at=at)
    bad = [c for c in choices if c not in QUANTIZE_CHOICES]
    for c in bad:
        r.bad(key, f"must list choices among {', '.join(QUANTIZE_CHOICES)}, got {c!r}")
    if not choices:
        r.bad(key, f"must list at least one of {', '.join(QUANTIZE_CHOICES)}")
    elif len(set(choices)) != len(choices):
        r.bad(key, f"lists a choice twice: {list(choices)}")
    method = r.take(d, "calibration", str, DEFAULT_METHOD, choices=CALIBRATION_METHODS, at="quantize")
    images = r.take(d, "calib_images", int, DEFAULT_IMAGES, check=lambda v: v >= 1, rule=">= 1", at="quantize")
    if at:
        r.done(d, "quantize")
    if bad or not choices or len(set(choices)) != len(choices):
        return QuantizeSpec()
    return QuantizeSpec(tuple(choices), method, images)


def _objectives(r: KeyReader, top: dict) -> tuple[Objective, ...]:
    raw = top.pop("objectives", None)
    if raw is None:
        return StudySpec.objectives
    if not isinstance(raw, list) or not raw:
        r.bad("objectives", f"must be a non-empty list of {{metric, direction}}, got {show(raw)}")
        return ()
    out, seen = [], set()
    for i, item in enumerate(raw):
        key = f"objectives[{i}]"
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, dict):
            r.bad(key, f"must be {{metric, direction}}, got {show(item)}")
            continue
        d = dict(item)
        metric = r.take(d, "metric", str, None, required=True, choices=tuple(METRICS), at=key)
        direction = r.take(d, "direction", str, None, choices=("maximize", "minimize"), at=key)
        r.done(d, key)
        if metric is None:
            continue
        natural = METRICS[metric]
        if direction is not None and direction != natural:
            r.bad(
                f"{key}.direction",
                f"{metric} is better when {'higher' if natural == 'maximize' else 'lower'}: "
                f"must be {natural}, got {direction}",
            )
        if metric in seen:
            r.bad(f"{key}.metric", f"{metric} is listed twice")
        seen.add(metric)
        out.append(Objective(metric, natural))
    return tuple(out)


def _constraints(r: KeyReader, top: dict, objectives: tuple[Objective, ...]) -> tuple[Constraint, ...]:
    raw = top.pop("constraints", None) or []
    if not isinstance(raw, list):
        r.bad("constraints", f"must be a list such as ['map50_95 >= 0.95 * baseline'], got {show(raw)}")
        return ()
    out = []
    for i, text in enumerate(raw):
        key = f"constraints[{i}]"
        m = _CONSTRAINT.match(text) if isinstance(text, str) else None
        if m is None:
            r.bad(key, f"must read '<metric> >= <number>[ * baseline]' (or <=), got {show(text)}")
            continue
        if m["metric"] not in METRICS:
            r.bad(key, f"unknown metric {m['metric']!r}, expected one of: {', '.join(METRICS)}")
            continue
        relative = bool(m["mul"] or m["base"])
        value = 1.0 if m["base"] else float(m["num"])
        if not math.isfinite(value):
            r.bad(key, f"the number must be finite, got {m['num']} (reads as {value:g})")
            continue
        out.append(Constraint(text.strip(), m["metric"], m["op"], value, relative))
    return tuple(out)


def _sampler(r: KeyReader, d: dict, n_objectives: int, seed: int) -> SamplerSpec:
    default = "nsga2" if n_objectives >= 2 else "tpe"
    name = r.take(d, "name", str, default, choices=SAMPLERS, at="sampler")
    s = r.take(d, "seed", int, seed, check=_is_seed, rule=_SEED_RULE, at="sampler")
    pop = r.take(d, "population_size", int, 16, check=lambda v: v >= 2, rule=">= 2", at="sampler")
    warm = r.take(d, "warm_start", str, "none", choices=WARM_STARTS, at="sampler")
    r.done(d, "sampler")
    return SamplerSpec(name, s, pop, warm)


def _baselines(r: KeyReader, d: dict) -> BaselinesSpec:
    ratios = r.take_list(d, "ratios", float, BaselinesSpec.ratios, at="baselines")
    for i, v in enumerate(ratios):
        if not 0 <= v < 1:
            r.bad(f"baselines.ratios[{i}]", f"must be >= 0 and < 1, got {v:g}")
    epochs = r.take(d, "epochs", int, None, check=lambda v: v >= 0, rule=">= 0", at="baselines")
    lr0 = r.take(d, "lr0", float, None, check=lambda v: v > 0, rule="> 0", at="baselines")
    r.done(d, "baselines")
    return BaselinesSpec(tuple(ratios), epochs, lr0)


def _budget(r: KeyReader, d: dict) -> BudgetSpec:
    n = r.take(d, "n_trials", int, 16, check=lambda v: v >= 1, rule=">= 1", at="budget", nullable=True)
    timeout = r.take(d, "timeout_s", float, None, check=lambda v: v > 0, rule="> 0", at="budget")
    fails = r.take(d, "max_failures", int, None, check=lambda v: v >= 1, rule=">= 1", at="budget")
    if n is None and timeout is None:
        r.bad("budget", "give n_trials, timeout_s or both (the study must end)")
    r.done(d, "budget")
    return BudgetSpec(n, timeout, fails)


def _resources(r: KeyReader, d: dict) -> ResourcesSpec:
    gpus = r.take(d, "gpus_per_trial", float, None, check=lambda v: v >= 0, rule=">= 0", at="resources")
    cpus = r.take(d, "cpus_per_trial", int, 1, check=lambda v: v >= 1, rule=">= 1", at="resources")
    conc = r.take(d, "max_concurrent", int, None, check=lambda v: v >= 1, rule=">= 1", at="resources")
    address = r.take(
        d, "address", str, None, check=_is_address, rule="auto, host:port or ray://host:port", at="resources"
    )
    num_cpus = r.take(d, "num_cpus", int, None, check=lambda v: v >= 1, rule=">= 1", at="resources")
    r.done(d, "resources")
    return ResourcesSpec(gpus, cpus, conc, address, num_cpus)


def _tracking(r: KeyReader, d: dict) -> TrackingSpec:
    uri = r.take(
        d,
        "uri",
        str,
        DEFAULT_TRACKING,
        check=_is_tracking_url,
        rule="an MLflow tracking URI (sqlite, postgresql, mysql, http, https)",
        at="tracking",
    )
    experiment = r.take(
        d,
        "experiment",
        str,
        None,
        check=_is_experiment_name,
        rule="a name, not a path (no '/' or '\\', not '.' or '..'; its artifacts go under artifact_location)",
        at="tracking",
    )
    artifacts = r.take(d, "artifacts", str, "pareto", choices=ARTIFACT_POLICIES, at="tracking")
    location = r.take(d, "artifact_location", str, DEFAULT_ARTIFACTS, at="tracking")
    refresh = r.take(d, "refresh_s", float, 10.0, check=lambda v: v >= 0, rule=">= 0", at="tracking")
    r.done(d, "tracking")
    return TrackingSpec(uri, experiment, artifacts, location, refresh)


def _fake(r: KeyReader, d: dict) -> FakeTrialSpec:
    sleep = r.take(d, "sleep_s", float, 0.05, check=lambda v: v >= 0, rule=">= 0", at="fake")
    fail_on = r.take_list(d, "fail_on", int, (), at="fake")
    nan_on = r.take_list(d, "nan_on", int, (), at="fake")
    kill_on = r.take_list(d, "kill_on", int, (), at="fake")
    kb = r.take(d, "checkpoint_kb", int, 64, check=lambda v: v >= 0, rule=">= 0", at="fake")
    twice = r.take(d, "kill_twice", bool, False, at="fake")
    r.done(d, "fake")
    return FakeTrialSpec(sleep, tuple(fail_on), tuple(nan_on), tuple(kill_on), kb, twice)


_KNOWN: dict[str, tuple[str, ...]] = {
    "": (
        "name",
        "model",
        "data",
        "test_data",
        "imgsz",
        "batch",
        "device",
        "seed",
        "pruning",
        "finetune",
        "quantize",
        "objectives",
        "constraints",
        "sampler",
        "baselines",
        "budget",
        "resources",
        "storage",
        "tracking",
        "trial",
        "fake",
    ),
    "pruning": ("method", "granularity", "importance", "ratio", "step", "groups", "exclude", "round_to"),
    "finetune": ("epochs", "lr0", "hyp", "overrides"),
    "quantize": ("choices", "calibration", "calib_images"),
    "sampler": ("name", "seed", "population_size", "warm_start"),
    "baselines": ("ratios", "epochs", "lr0"),
    "budget": ("n_trials", "timeout_s", "max_failures"),
    "resources": ("gpus_per_trial", "cpus_per_trial", "max_concurrent", "address", "num_cpus"),
    "tracking": ("uri", "experiment", "artifacts", "artifact_location", "refresh_s"),
    "fake": ("sleep_s", "fail_on", "nan_on", "kill_on", "checkpoint_kb", "kill_twice"),
}


_SEED_RULE = "an integer in [0, 2^32)"


def _is_seed(v: int) -> bool:
    return 0 <= v < MAX_SEED


def _is_experiment_name(v: str) -> bool:
    """MLflow stores a local experiment's artifacts in ``artifact_location/<experiment>``: a path would escape it."""
    return v.strip() not in ("", ".", "..") and not re.search(r"[/\\]", v) and not re.match(r"^[A-Za-z]:", v)


def _is_device(v: str) -> bool:
    return v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v) is not None


def _scheme(v: str) -> str | None:
    """The URL's scheme without its driver (``postgresql+psycopg2://`` -> postgresql), None if not a URL."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9.\-]*)(?:\+[A-Za-z0-9_]+)?://", v)
    return m[1].lower() if m else None


def _is_storage_url(v: str) -> bool:  # what optuna's RDBStorage and our journal:// open
    return _scheme(v) in ("sqlite", "postgresql", "mysql", "oracle", "mssql", "journal")


def _is_tracking_url(v: str) -> bool:  # MLflow 3.17 has no plain file store
    return _scheme(v) in ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def _is_address(v: str) -> bool:
    return v == "auto" or v.startswith("ray://") or re.fullmatch(r"[\w.\-]+:\d+", v) is not None
