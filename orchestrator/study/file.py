"""Reading a study file (``studies/*.yaml``) into the frozen dataclasses of :mod:`.spec`.

Every problem is collected with its key path and reported at once in one :class:`ConfigError`
(``studies/x.yaml: pruning.ratio.max: must be < 1, got 1.2``), so a user fixes a file in one pass. The
settings' defaults and rules live on the dataclass fields (:func:`.config_reader.setting`), the dimensions'
in :mod:`.dimensions`; this module only walks the file.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ..bounded_yaml import YamlRefused, read_yaml
from ..errors import ConfigError
from ..vocabulary import DATA_IMPORTANCES, RECOVERY_DEFAULT, RECOVERY_STEPS
from ..yolo.hyp import Hyp
from .dimensions import DIMENSIONS, Range
from .keys import KeyReader, close_match, is_number, known_keys, ordered, read_fields, show, to_float, unusable
from .metrics import CUT_COSTS, LATENCY_OBJECTIVES, OBJECTIVES, QUALITY_METRICS
from .spec import (
    DEFAULT_SCREEN,
    DEFAULT_STOP_MARGIN,
    MAX_GRID,
    BaselinesSpec,
    BudgetSpec,
    CacheSpec,
    Constraint,
    EarlyStopSpec,
    FakeTrialSpec,
    FinetuneSpec,
    GroupBounds,
    Objective,
    PruningSpec,
    QuantizeSpec,
    ResourcesSpec,
    SamplerSpec,
    ScreenSpec,
    StudySpec,
    TrackingSpec,
)

_CONSTRAINT = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=)\s*(?:(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<mul>\*\s*baseline)?"
    r"|(?P<base>baseline))\s*$"
)


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
    r = KeyReader(str(path), _known())
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [("", f"must be a mapping of keys, got {type(raw).__name__}")])
    top = r.section(raw, "")
    quantize = top.pop("quantize", None)
    if quantize is not None and not isinstance(quantize, dict):  # the short form: `quantize: [none, int8]`
        quantize = {"choices": quantize, "__short__": True}
    sizes = top.pop("imgsz") if isinstance(top.get("imgsz"), list) else None
    spec: dict[str, Any] = read_fields(r, top, StudySpec)
    if sizes is not None:  # `imgsz: [320, 256]`: searched (dimensions.Sizes reads and checks it), the first is the base
        top["imgsz"] = sizes
        spec["imgsz"] = sizes[0] if sizes and type(sizes[0]) is int else spec["imgsz"]
    spec.update(path=path, text=text, space={})
    pruning, named = _pruning(r, r.section(top, "pruning"), spec["space"])
    d = r.section(top, "finetune")
    finetune = read_fields(r, d, FinetuneSpec, "finetune")
    _read_dimensions(r, d, "finetune", spec["space"], finetune)
    spec["finetune"] = FinetuneSpec(**finetune, overrides=_overrides(r, d))
    r.done(d, "finetune")
    d = dict(quantize or {})
    short = d.pop("__short__", False)
    spec["quantize"] = QuantizeSpec(**read_fields(r, d, QuantizeSpec, "quantize"))
    if any(i < 0 for i in spec["quantize"].float_layers):
        r.bad("quantize.float_layers", f"must be layer indices >= 0, got {list(spec['quantize'].float_layers)}")
    _read_dimensions(r, d, "quantize", spec["space"], {}, at="quantize" if short else None)
    r.done(d, "quantize")
    for section in dict.fromkeys(dim.section for dim in DIMENSIONS.values()):  # a dimension's own section
        if section not in ("pruning", "finetune", "quantize"):
            d = top if section == "" else r.section(top, section)
            _read_dimensions(r, d, section, spec["space"], {"imgsz": spec["imgsz"]} if section == "" else {})
            if section:
                r.done(d, section)
    spec["objectives"] = _objectives(r, top)
    spec["pruning"] = _evidence_defaults(pruning, named, spec["objectives"])
    spec["baselines"] = _baselines(r, r.section(top, "baselines"), spec["space"])
    spec["budget"] = BudgetSpec(**_read_section(r, top, "budget", BudgetSpec))
    if spec["budget"].n_trials is None and spec["budget"].timeout_s is None:
        r.bad("budget", "give n_trials, timeout_s or both (the study must end)")
    sections = (("resources", ResourcesSpec), ("cache", CacheSpec), ("tracking", TrackingSpec), ("fake", FakeTrialSpec))
    for name, cls in sections:
        spec[name] = cls(**_read_section(r, top, name, cls))
    spec["constraints"] = _constraints(r, top)
    sampler_defaults = {"seed": spec["seed"]}
    spec["sampler"] = SamplerSpec(**_read_section(r, top, "sampler", SamplerSpec, **sampler_defaults))
    spec["screen"] = _screen(r, top)
    spec["early_stop"] = _early_stop(r, top, spec)
    _check_together(r, spec)
    r.done(top, "")
    if r.problems:
        raise ConfigError(str(path), r.problems)
    return StudySpec(**spec)


def _read_section(r: KeyReader, top: dict, name: str, cls: type, /, **defaults: Any) -> dict[str, Any]:
    """A section made only of settings: read, then its unknown keys reported."""
    d = r.section(top, name)
    values = read_fields(r, d, cls, name, **defaults)
    r.done(d, name)
    return values


def _check_together(r: KeyReader, spec: dict[str, Any]) -> None:
    """Rules that span sections."""
    pr = spec["pruning"]
    if pr.ratio.fixed and all(g.ratio.fixed for g in pr.groups) and all(d.fixed for d in spec["space"].values()):
        keys = ["pruning.ratio", *(dim.path for dim in DIMENSIONS.values())]
        r.bad(
            "pruning.ratio",
            f"the search space is empty ({', '.join(keys[:-1])} and {keys[-1]} are all fixed): "
            "give one of them {min, max}",
        )
    warm = spec["sampler"].warm_start
    if warm == "global_magnitude" and pr.method != "unstructured":
        r.bad("sampler.warm_start", f"{warm} allocates single weights: it needs pruning.method unstructured")
    if warm in ("sensitivity", "latency") and pr.method != "structured":
        r.bad("sampler.warm_start", f"{warm} allocates channel cuts: it needs pruning.method structured")
    if spec["sampler"].space == "relative" and warm == "none":
        r.bad("sampler.space", "relative searches around the warm-start allocation: give sampler.warm_start")
    if warm == "latency" and not any(o.metric in LATENCY_OBJECTIVES for o in spec["objectives"]):
        need = " or ".join(LATENCY_OBJECTIVES)
        r.bad("sampler.warm_start", f"latency ranks cuts by ONNX Runtime milliseconds: it needs an objective {need}")
    if warm != "none" and not spec["baselines"].ratios:
        r.bad("sampler.warm_start", "pairs one allocation with each uniform baseline: baselines.ratios is empty")


# ---------------------------------------------------------------- sections


def _read_dimensions(
    r: KeyReader, d: dict, section: str, space: dict[str, Any], context: dict[str, Any], at: str | None = None
) -> None:
    """The dimensions declared in ``section``, read into ``space`` (``at`` names the key for a short form)."""
    for name, dim in DIMENSIONS.items():
        if dim.section == section:
            space[name] = dim.read(r, d.pop(dim.key, None), at or dim.path, context)


def _pruning(r: KeyReader, d: dict, space: dict[str, Any]) -> tuple[PruningSpec, set[str]]:
    """The pruning section, and the keys it names (the others take :func:`_evidence_defaults` once the objectives
    are known); its dimensions (``depth``) go to ``space``."""
    named = set(d)
    _read_dimensions(r, d, "pruning", space, {})
    values = read_fields(r, d, PruningSpec, "pruning")
    if "method" not in named and ("recover" in named or values["importance"] in ("bn_scale", *DATA_IMPORTANCES)):
        values["method"] = "structured"  # what the named recovery or channel importance needs, whatever the costs
        named.add("method")
    values["ratio"] = _ratio_range(r, d.pop("ratio", None), "pruning.ratio", PruningSpec.ratio)
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
    values["groups"] = tuple(groups)
    if values["importance"] in ("bn_scale", *DATA_IMPORTANCES) and values["method"] == "unstructured":
        r.bad(
            "pruning.importance",
            f"{values['importance']} ranks whole channels: use it with method structured, or l1/l2",
        )
    for i, step in enumerate(values["recover"]):
        if step not in RECOVERY_STEPS:
            r.bad(f"pruning.recover[{i}]", f"must be one of {', '.join(RECOVERY_STEPS)}, got {show(step)}")
    if values["recover"] and values["method"] != "structured":
        r.bad("pruning.recover", "recovers a channel cut: it needs pruning.method structured")
    step, ratio = values["step"], values["ratio"]
    if step is not None and ratio is not None:
        widest = max([ratio.high - ratio.low] + [g.ratio.high - g.ratio.low for g in groups])
        if widest / step + 1 > MAX_GRID:
            r.bad(
                "pruning.step",
                f"{step:g} makes {widest / step + 1:.3g} ratios per group: at most {MAX_GRID} "
                f"(use a step >= {widest / (MAX_GRID - 1):.2g}, or no step for a continuous range)",
            )
    r.done(d, "pruning")
    return PruningSpec(**values), named


# the cost objectives zeroed weights lower (a compressed download, a count of nonzero weights): only these make
# unstructured masks a result; every other cost (GFLOPs, latency, dense params or bytes) needs channels removed
_ZEROS_PAY = ("nonzero_params", "size_zip_mb")


def _evidence_defaults(p: PruningSpec, named: set[str], objectives: tuple[Objective, ...]) -> PruningSpec:
    """What a study file that names no method, importance or recovery gets: what the benches rank best for its
    objectives (docs/pruning.md). Unstructured L1 masks when every cost is one that zeros lower; otherwise channel
    cuts ranked by ``output_error`` with ``compensate, reconstruct`` recovery on train images (0.186 one-shot at
    0.82x GFLOPs where L1 without recovery keeps 0.008; "Structured recovery")."""
    costs = [o.metric for o in objectives if o.metric not in QUALITY_METRICS]
    changes: dict[str, Any] = {}
    if "method" not in named:
        changes["method"] = "unstructured" if costs and all(c in _ZEROS_PAY for c in costs) else "structured"
    method = changes.get("method", p.method)
    if method == "structured":
        if "importance" not in named:
            changes["importance"] = "output_error"
        if "recover" not in named:
            changes["recover"] = RECOVERY_DEFAULT
    return replace(p, **changes)


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
    ok = ok and ordered(r, key, lo, hi)
    return Range(lo, hi) if ok else default


def _overrides(r: KeyReader, d: dict) -> dict[str, Any]:
    overrides = d.pop("overrides", None) or {}
    if not isinstance(overrides, dict):
        r.bad("finetune.overrides", f"must map hyp keys to numbers, got {show(overrides)}")
        return {}
    known = {f.name: f.type for f in fields(Hyp)}
    searched = {dim.name for dim in DIMENSIONS.values() if dim.section == "finetune"}
    for k, v in list(overrides.items()):
        if k not in known:
            r.bad(f"finetune.overrides.{k}", f"unknown hyp key{close_match(str(k), known)}")
        elif k in searched:
            r.bad(f"finetune.overrides.{k}", f"set finetune.{k} instead (it may be searched)")
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
    return dict(overrides)


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
        metric = r.take(d, "metric", str, None, required=True, choices=tuple(OBJECTIVES), at=key)
        direction = r.take(d, "direction", str, None, choices=("maximize", "minimize"), at=key)
        r.done(d, key)
        if metric is None:
            continue
        natural = OBJECTIVES[metric]
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


def _constraints(r: KeyReader, top: dict) -> tuple[Constraint, ...]:
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
        if m["metric"] not in OBJECTIVES:
            r.bad(key, f"unknown metric {m['metric']!r}, expected one of: {', '.join(OBJECTIVES)}")
            continue
        relative = bool(m["mul"] or m["base"])
        value = 1.0 if m["base"] else float(m["num"])
        if not math.isfinite(value):
            r.bad(key, f"the number must be finite, got {m['num']} (reads as {value:g})")
            continue
        out.append(Constraint(text.strip(), m["metric"], m["op"], value, relative))
    return tuple(out)


def _screen(r: KeyReader, top: dict) -> ScreenSpec:
    """``screen: {min_map: 0.3}``, ``screen: true`` (the default floor) or ``screen: false``/absent (off)."""
    raw = top.pop("screen", None)
    if raw is None or raw is False:
        return ScreenSpec()
    if raw is True:
        return ScreenSpec(DEFAULT_SCREEN)
    if not isinstance(raw, dict):
        r.bad("screen", f"must be true, false or {{min_map: 0.3}}, got {raw!r}")
        return ScreenSpec()
    return ScreenSpec(**_read_section(r, {"screen": raw}, "screen", ScreenSpec))


def _early_stop(r: KeyReader, top: dict, spec: dict[str, Any]) -> EarlyStopSpec:
    """``early_stop: {margin: 0.02, after: 1}``, ``true`` (the default margin) or ``false``/absent (off); refused
    where it could never act or could not compare: a cost objective measured only after the fine-tune, or no
    trial running more epochs than ``after``."""
    raw = top.pop("early_stop", None)
    if raw is None or raw is False:
        return EarlyStopSpec()
    if raw is True:
        raw = {"margin": DEFAULT_STOP_MARGIN}
    if not isinstance(raw, dict):
        r.bad("early_stop", f"must be true, false or {{margin: 0.02, after: 1}}, got {raw!r}")
        return EarlyStopSpec()
    raw = {"margin": DEFAULT_STOP_MARGIN, **raw}
    stop = EarlyStopSpec(**_read_section(r, {"early_stop": raw}, "early_stop", EarlyStopSpec))
    late = [o.metric for o in spec.get("objectives", ()) if o.metric not in (*QUALITY_METRICS, *CUT_COSTS)]
    if late:
        r.bad(
            "early_stop",
            f"objective {late[0]} is measured only after the fine-tune; early stopping compares costs known at the "
            f"cut ({', '.join(CUT_COSTS)}): drop early_stop or that objective",
        )
    epochs = spec["space"].get("epochs")
    if epochs is not None and epochs.high <= stop.after:
        most = int(epochs.high)
        r.bad("early_stop.after", f"{stop.after} >= the most epochs a trial runs ({most}): it could never stop one")
    return stop


def _baselines(r: KeyReader, d: dict, space: dict[str, Any]) -> BaselinesSpec:
    ratios = read_fields(r, d, BaselinesSpec, "baselines")["ratios"]
    for i, v in enumerate(ratios):
        if not 0 <= v < 1:
            r.bad(f"baselines.ratios[{i}]", f"must be >= 0 and < 1, got {v:g}")
    values = {}
    for name, dim in DIMENSIONS.items():  # baselines.<dimension>: the value baselines take instead
        if d.get(name) is not None and (v := dim.read_value(r, d.pop(name), f"baselines.{name}")) is not None:
            values[name] = v
    r.done(d, "baselines")
    return BaselinesSpec(tuple(ratios), values)


def _known() -> dict[str, tuple[str, ...]]:
    """Each section's keys, from the dataclasses and the dimensions (for "did you mean" on an unknown key)."""
    known = {"": known_keys(StudySpec)}
    for name, cls in (("pruning", PruningSpec), ("finetune", FinetuneSpec), ("quantize", QuantizeSpec)):
        known[name] = known_keys(cls)
    for name, cls in (("sampler", SamplerSpec), ("budget", BudgetSpec), ("resources", ResourcesSpec)):
        known[name] = known_keys(cls)
    known.update(tracking=known_keys(TrackingSpec), fake=known_keys(FakeTrialSpec))
    known.update(cache=known_keys(CacheSpec), screen=known_keys(ScreenSpec), early_stop=known_keys(EarlyStopSpec))
    known["baselines"] = (*known_keys(BaselinesSpec), *DIMENSIONS)
    for dim in DIMENSIONS.values():
        known[dim.section] = (*known.get(dim.section, ()), dim.key)
    return known
