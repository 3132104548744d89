"""The search dimensions, each declared once: study-file syntax and checks, Optuna distribution, baseline value.

A dimension's name is everything else at once: the Optuna parameter, the MLflow param, the key of
``TrialSpec.values`` the trial reads, the ``status`` column and the ``baselines.<name>`` override. Adding one is
a declaration here (or :func:`register` from a plugin or a test) plus its use inside the trial; the spec loader,
the search space, the driver, MLflow, ``check`` and ``status`` all loop over :data:`DIMENSIONS`.

The per-group pruning ratios are the one family of dimensions (one parameter per group the model has, known
only once the baseline is loaded): :data:`RATIO_PREFIX` and :func:`ratio_distributions` declare it.

No Optuna import at module level: the study file is checked (``orchestrator check``) without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..vocabulary import MAX_IMGSZ
from .keys import KeyReader, is_number, show, to_float, unusable

RATIO_PREFIX = "ratio."
# sampler.space: relative (search/relative.py): one level plus one bounded offset per group around the warm-start
# allocation at that level; the ratios a trial runs are translated from them and recorded beside them
LEVEL = "level"
OFFSET_PREFIX = "offset."


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
class Choices:
    """Categorical options; one option fixes the value."""

    options: tuple[str, ...]

    @property
    def fixed(self) -> bool:
        return len(self.options) == 1


class Dimension:
    """One searched value. Subclasses give the syntax; ``section``/``key`` say where it lives in the study file."""

    name: str
    section: str  # study-file section ("" = top level)
    key: str  # key inside the section

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    def read(self, r: KeyReader, raw: Any, path: str, context: dict[str, Any]) -> Any:
        """The domain the file gives (``raw`` is None when absent); problems go to ``r`` with ``path``."""
        raise NotImplementedError

    def read_value(self, r: KeyReader, raw: Any, path: str) -> Any:
        """One value (``baselines.<name>``); None and a problem on ``r`` when unusable."""
        raise NotImplementedError

    def distribution(self, domain: Any) -> Any:
        raise NotImplementedError

    def is_param(self, domain: Any) -> bool:
        """An Optuna parameter (sampled, and recorded even when fixed); False: the trial gets :meth:`value_of`."""
        return True

    def value_of(self, domain: Any) -> Any:
        """The value when the dimension is not a parameter of the study."""
        raise NotImplementedError

    def baseline(self, domain: Any) -> Any:
        """The value enqueued trials (uniform baselines, warm starts) take unless ``baselines.<name>`` says."""
        raise NotImplementedError

    def describe(self, domain: Any) -> Any:
        """JSON-ready form of the domain (``orchestrator check --json``)."""
        raise NotImplementedError


class IntRange(Dimension):
    """An integer, or ``{min, max}``, at least ``minimum``; baselines take the largest."""

    def __init__(self, name: str, section: str, default: tuple[int, int], *, key: str = "", minimum: int = 0):
        self.name, self.section, self.key = name, section, key or name
        self.default, self.minimum = Range(*default), minimum

    def read(self, r: KeyReader, raw: Any, path: str, context: dict[str, Any]) -> Range:
        if raw is None:
            return self.default
        if isinstance(raw, bool) or not isinstance(raw, int | dict):
            r.bad(path, f"must be an integer or {{min, max}}, got {show(raw)}")
            return self.default
        if isinstance(raw, int):
            v = self.read_value(r, raw, path)
            return self.default if v is None else Range(v, v)
        d, rule = dict(raw), f">= {self.minimum}"
        lo = r.take(d, "min", int, self.minimum, check=lambda v: v >= self.minimum, rule=rule, at=path)
        hi = r.take(d, "max", int, None, required=True, check=lambda v: v >= self.minimum, rule=rule, at=path)
        r.done(d, path)
        if lo is None or hi is None:
            return self.default
        if lo > hi:
            r.bad(path, f"min <= max must hold, got min={lo} max={hi}")
            return self.default
        return Range(lo, hi)

    def read_value(self, r: KeyReader, raw: Any, path: str) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int):
            r.bad(path, f"must be an integer, got {show(raw)}")
        elif raw < self.minimum:
            r.bad(path, f"must be >= {self.minimum}, got {raw}")
        else:
            return raw
        return None

    def distribution(self, domain: Range) -> Any:
        import optuna.distributions as d

        return d.IntDistribution(int(domain.low), int(domain.high))

    def value_of(self, domain: Range) -> int:
        return int(domain.low)

    def baseline(self, domain: Range) -> int:
        return int(domain.high)  # the most a searched trial can get: baselines are never short-changed

    def describe(self, domain: Range) -> list[int]:
        return [int(domain.low), int(domain.high)]


class PositiveFloat(Dimension):
    """A number > 0, or ``{min, max, log}`` (log scale by default); baselines take the geometric middle."""

    def __init__(self, name: str, section: str, default: Callable[[dict[str, Any]], float], *, key: str = ""):
        self.name, self.section, self.key = name, section, key or name
        self.default = default  # context (the section's values read so far) -> the value when not given

    def read(self, r: KeyReader, raw: Any, path: str, context: dict[str, Any]) -> Range:
        v0 = self.default(context)
        fallback = Range(v0, v0)
        if raw is None:
            return fallback
        if is_number(raw):
            v = self.read_value(r, raw, path)
            return fallback if v is None else Range(v, v)
        if not isinstance(raw, dict):
            r.bad(path, f"must be a number or {{min, max}}, got {show(raw)}")
            return fallback
        d = dict(raw)
        lo = r.take(d, "min", float, None, required=True, check=lambda v: v > 0, rule="> 0", at=path)
        hi = r.take(d, "max", float, None, required=True, check=lambda v: v > 0, rule="> 0", at=path)
        log = r.take(d, "log", bool, True, at=path)
        r.done(d, path)
        if lo is None or hi is None:
            return fallback
        if lo > hi:
            r.bad(path, f"min <= max must hold, got min={lo:g} max={hi:g}")
            return fallback
        return Range(lo, hi, bool(log))

    def read_value(self, r: KeyReader, raw: Any, path: str) -> float | None:
        if not is_number(raw):
            r.bad(path, f"must be a number, got {show(raw)}")
        elif (why := unusable(to_float(raw))) is not None:
            r.bad(path, why)
        elif not raw > 0:
            r.bad(path, f"must be > 0, got {show(raw)}")
        else:
            return to_float(raw)
        return None

    def distribution(self, domain: Range) -> Any:
        import optuna.distributions as d

        return d.FloatDistribution(domain.low, domain.high, log=domain.log and domain.low < domain.high)

    def value_of(self, domain: Range) -> float:
        return domain.low

    def baseline(self, domain: Range) -> float:
        return math.sqrt(domain.low * domain.high)

    def describe(self, domain: Range) -> list[float]:
        return [domain.low, domain.high]


class Categorical(Dimension):
    """A list of options (or one); a parameter only when the file asks for more than the default."""

    def __init__(self, name: str, section: str, options: tuple[str, ...], default: tuple[str, ...], *, key: str = ""):
        self.name, self.section, self.key = name, section, key or name
        self.options, self.default = options, Choices(default)

    def read(self, r: KeyReader, raw: Any, path: str, context: dict[str, Any]) -> Choices:
        if raw is None:
            return self.default
        listed = raw if isinstance(raw, list) else [raw]
        among = ", ".join(self.options)
        bad = [c for c in listed if c not in self.options]
        for c in bad:
            r.bad(path, f"must list choices among {among}, got {show(c)}")
        if not listed:
            r.bad(path, f"must list at least one of {among}")
        elif len(set(map(str, listed))) != len(listed):
            r.bad(path, f"lists a choice twice: {listed}")
        elif not bad:
            return Choices(tuple(listed))
        return self.default

    def read_value(self, r: KeyReader, raw: Any, path: str) -> str | None:
        if raw in self.options:
            return raw
        r.bad(path, f"must be one of {', '.join(self.options)}, got {show(raw)}")
        return None

    def distribution(self, domain: Choices) -> Any:
        import optuna.distributions as d

        return d.CategoricalDistribution(domain.options)

    def is_param(self, domain: Choices) -> bool:
        return domain != self.default

    def value_of(self, domain: Choices) -> str:
        return domain.options[-1]

    def baseline(self, domain: Choices) -> str:
        return domain.options[-1]  # the last choice listed is the one the study is after (e.g. int8)

    def describe(self, domain: Choices) -> list[str]:
        return list(domain.options)


class Sizes(Dimension):
    """The input size: ``imgsz: 320`` (fixed) or a list of sizes, the first the study's base.

    A size needs no data to buy its speed (288 px is about 0.81x the FLOPs of 320, 256 about 0.64x), so it is
    searched beside the cuts. The base size is what every speed-up is measured against and what the enqueued
    trials (uniform baselines, warm starts) run at: the other sizes are what the sampler may trade for speed.
    """

    name, section, key = "imgsz", "", "imgsz"

    def read(self, r: KeyReader, raw: Any, path: str, context: dict[str, Any]) -> Choices:
        base = context.get("imgsz", 640)
        if raw is None:
            return Choices((base,))
        if not isinstance(raw, list) or not raw:
            r.bad(path, f"must be a size or a non-empty list of sizes, got {show(raw)}")
            return Choices((base,))
        sizes = [self.read_value(r, v, f"{path}[{i}]") for i, v in enumerate(raw)]
        if any(v is None for v in sizes):
            return Choices((base,))
        if len(set(sizes)) != len(sizes):
            r.bad(path, f"lists a size twice: {raw}")
            return Choices((base,))
        return Choices(tuple(sizes))

    def read_value(self, r: KeyReader, raw: Any, path: str) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int):
            r.bad(path, f"must be an integer size in pixels, got {show(raw)}")
        elif not (32 <= raw <= MAX_IMGSZ and raw % 32 == 0):
            r.bad(path, f"must be a multiple of 32 (the largest stride) from 32 to {MAX_IMGSZ}, got {raw}")
        else:
            return raw
        return None

    def distribution(self, domain: Choices) -> Any:
        import optuna.distributions as d

        return d.CategoricalDistribution(domain.options)

    def is_param(self, domain: Choices) -> bool:
        return not domain.fixed

    def value_of(self, domain: Choices) -> int:
        return int(domain.options[0])

    def baseline(self, domain: Choices) -> int:
        return int(domain.options[0])  # enqueued trials run at the base size: what the search is compared to

    def describe(self, domain: Choices) -> list[int]:
        return [int(v) for v in domain.options]


class Depth(IntRange):
    """Bottlenecks dropped from the C3 blocks, least missed first: ``pruning.depth: 2`` or ``{min, max}``.

    A total, not a count per C3: the bottlenecks are ranked once per worker on train images (residual ones first,
    then by how little the block's output changes without them, ``prune.depth.rank_bottlenecks``), so one integer
    orders every depth cut from least to most harmful and the sampler searches a line, not a product of blocks.
    Not given: 0 and no parameter, so a study that never names it keeps its columns. Baselines drop the fewest:
    a depth cut is a cost the uniform ratio baselines must not pay unasked.
    """

    def __init__(self) -> None:
        super().__init__("depth", "pruning", (0, 0))

    def is_param(self, domain: Range) -> bool:
        return domain != self.default

    def baseline(self, domain: Range) -> int:
        return int(domain.low)


def _preset_lr0(context: dict[str, Any]) -> float:
    from ..yolo.hyp import PRESETS  # plain dataclasses: no torch

    return PRESETS[context.get("hyp") or "finetune"].lr0  # not given: the preset's own (tuned) lr0


QUANTIZE_CHOICES = ("none", "int8")  # none: the fp16 .pt is deployed; int8: an ONNX Runtime int8 QDQ file

# declaration order is parameter order (Optuna, MLflow, status columns)
DIMENSIONS: dict[str, Dimension] = {}


def register(dim: Dimension) -> Dimension:
    """Declare a dimension (a plugin's, or a test's); its name must be new."""
    if dim.name in DIMENSIONS or dim.name == LEVEL or dim.name.startswith((RATIO_PREFIX, OFFSET_PREFIX)):
        raise ValueError(f"dimension {dim.name!r} is already declared")
    DIMENSIONS[dim.name] = dim
    return dim


def unregister(name: str) -> None:
    DIMENSIONS.pop(name, None)


register(IntRange("epochs", "finetune", (0, 3)))  # fine-tune epochs; 0 = none
register(PositiveFloat("lr0", "finetune", _preset_lr0))
register(Categorical("quantize", "quantize", QUANTIZE_CHOICES, ("none",), key="choices"))
register(Sizes())
register(Depth())


def ratio_distributions(bounds: dict[str, tuple[float, float]], step: float | None) -> dict[str, Any]:
    """The ratio family: one ``ratio.<group>`` parameter per group, on the ``step`` grid when it fits."""
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for group, (lo, hi) in bounds.items():
        if step and hi - lo >= step:
            hi = lo + math.floor((hi - lo) / step + 1e-9) * step
            out[RATIO_PREFIX + group] = d.FloatDistribution(lo, round(hi, 10), step=step)
        else:
            out[RATIO_PREFIX + group] = d.FloatDistribution(lo, hi)
    return out


def relative_distributions(
    groups: list[str], levels: tuple[float, ...], offset: float, step: float | None
) -> dict[str, Any]:
    """The relative family: ``level`` on the allocations' grid and one ``offset.<group>`` in [-offset, offset]."""
    import optuna.distributions as d

    if len(levels) > 1:  # ordered: TPE models a level as a number, not as unrelated choices
        gap = round(levels[1] - levels[0], 10)
        out: dict[str, Any] = {LEVEL: d.FloatDistribution(levels[0], levels[-1], step=gap)}
    else:
        out = {LEVEL: d.CategoricalDistribution(levels)}
    if step and offset >= step:
        k = math.floor(offset / step + 1e-9)
        dist = d.FloatDistribution(round(-k * step, 10), round(k * step, 10), step=step)
    else:
        dist = d.FloatDistribution(-offset, offset)
    out.update({OFFSET_PREFIX + g: dist for g in groups})
    return out


def ratio_params(ratios: dict[str, float]) -> dict[str, float]:
    return {RATIO_PREFIX + g: float(r) for g, r in ratios.items()}


def trial_ratios(params: dict[str, Any]) -> dict[str, float]:
    return {k[len(RATIO_PREFIX) :]: float(v) for k, v in params.items() if k.startswith(RATIO_PREFIX)}


def trial_values(params: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """Every declared dimension's value for one trial: its parameter, else the study's fixed value."""
    return {name: params[name] if name in params else dim.value_of(space[name]) for name, dim in DIMENSIONS.items()}


def parameter_names(space: dict[str, Any]) -> list[str]:
    """The dimensions that are Optuna parameters of a study (its ``status`` columns, its CSV columns)."""
    return [name for name, dim in DIMENSIONS.items() if dim.is_param(space[name])]
