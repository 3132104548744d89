"""The search space as Optuna distributions, the study itself (create, load, resume), Pareto front and hypervolume.

Only the driver process talks to the Optuna storage (workers never do), so a SQLite file is safe for a
local study; clusters use PostgreSQL or a journal file on shared disk (``journal:///path/study.log``).
Trial attributes hold everything a trial produced (metrics, history, failure reason), so the storage
alone is enough to rebuild the MLflow view of a study after a crash.
"""

from __future__ import annotations

import fnmatch
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OrchestratorError
from ..study.dimensions import DIMENSIONS, ratio_distributions, ratio_params, trial_ratios
from ..study.spec import StudySpec
from ..study.stores import has_tables
from ..urls import mask_url

# trial user attributes (the storage is the source of truth for everything a trial produced)
ATTR_METRICS = "metrics"
ATTR_HISTORY = "history"
ATTR_FAILURE = "failure"
ATTR_DEVICE = "device"
ATTR_WORKER = "worker"
ATTR_WALL = "wall_s"
ATTR_BASELINE = "uniform_ratio"  # set on enqueued uniform baselines
ATTR_WARM_START = "warm_start"  # set on enqueued warm-start allocations: the target sparsity
ATTR_RETRY_OF = "retry_of"
ATTR_INTENDED = "intended"  # set on enqueued trials: their parameters, complete even before they are asked
# study user attributes
STUDY_BASELINE = "baseline"  # the unpruned model's groups + metrics
STUDY_SPEC = "study_file"
STUDY_IDENTITY = "identity"  # {"uid", "created"}: set once at creation; MLflow's parent run records it
STUDY_ORPHAN_FAILURES = "orphan_failures"  # {trial number: reason} for trials failed after their driver died


@dataclass(frozen=True)
class SearchSpace:
    """One ratio per group plus the declared dimensions; fixed values are not searched but still recorded."""

    ratios: dict[str, tuple[float, float]]  # group -> (low, high)
    step: float | None
    dimensions: dict[str, Any]  # dimension name -> its domain (spec.space)

    def distributions(self) -> dict[str, Any]:
        out = ratio_distributions(self.ratios, self.step)
        for name, dim in DIMENSIONS.items():
            if dim.is_param(self.dimensions[name]):
                out[name] = dim.distribution(self.dimensions[name])
        return out

    def enqueued_params(self, ratios: dict[str, float], values: dict[str, Any]) -> dict[str, Any]:
        """A trial's parameters from its ratio map and the dimensions' values (those that are parameters)."""
        params: dict[str, Any] = ratio_params(ratios)
        params.update({k: v for k, v in values.items() if DIMENSIONS[k].is_param(self.dimensions[k])})
        return params


def build_space(spec: StudySpec, groups: list[str]) -> SearchSpace:
    """Apply global and per-group ratio bounds (first matching pattern wins) to the model's groups."""
    problems = []
    for gb in spec.pruning.groups:
        if not any(fnmatch.fnmatchcase(g, gb.pattern) for g in groups):
            problems.append((f"pruning.groups.{gb.pattern}", f"matches no group; the groups are: {', '.join(groups)}"))
    if problems:
        raise ConfigError(str(spec.path), problems)
    ratios = {}
    for g in groups:
        rng = next((gb.ratio for gb in spec.pruning.groups if fnmatch.fnmatchcase(g, gb.pattern)), spec.pruning.ratio)
        ratios[g] = (rng.low, rng.high)
    if not ratios:
        raise ConfigError(str(spec.path), [("pruning", "the model has no prunable group left: check exclude")])
    return SearchSpace(ratios, spec.pruning.step, dict(spec.space))


def baseline_values(spec: StudySpec) -> dict[str, Any]:
    """Every dimension's value for the enqueued trials: ``baselines.<name>`` if given, else the dimension's choice
    (the most fine-tuning a searched trial can get, the middle lr0, the deployable form the study is after)."""
    return {name: spec.baselines.values.get(name, dim.baseline(spec.space[name])) for name, dim in DIMENSIONS.items()}


# ---------------------------------------------------------------- storage and study


def open_storage(url: str, *, create: bool = True):
    """An Optuna storage from a URL; ``journal:///path`` is a journal file (for shared disks)."""
    import optuna

    try:
        if url.startswith("journal://"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url[len("journal://") :])
            if not create and not path.exists():
                raise OrchestratorError(f"no study storage at {path}: run `orchestrator run` first")
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///") :])
            if not create and not path.exists():
                raise OrchestratorError(f"no study storage at {path}: run `orchestrator run` first")
            if not create and not has_tables(url, "studies"):  # Optuna would create its tables: a read must not
                raise OrchestratorError(f"no study storage at {path} (the file holds no Optuna tables): run first")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        except Exception:  # two processes creating the schema at once (a `status` during the first `run`)
            time.sleep(1.0)
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except OrchestratorError:
        raise
    except Exception as e:
        msg = mask_url(str(e), url).splitlines()[0]
        raise OrchestratorError(f"cannot open the Optuna storage {mask_url(url)}: {msg}") from None


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}  # wait for a reader (status, ui) instead of "database is locked"
    return {"pool_pre_ping": True}  # a server that restarted does not break a days-long study


def make_sampler(spec: StudySpec, n_existing: int):
    """The study's sampler; the seed is offset by the trials already there so a resume does not replay them.

    Constraints reach every sampler through ``Trial.set_constraint`` (the driver), not a ``constraints_func``.
    """
    import optuna

    s = spec.sampler
    seed = (s.seed + n_existing) % 2**32  # the samplers take [0, 2^32): a seed near the top must survive a resume
    if s.name == "gp":
        # Gaussian process (several objectives since Optuna 4.4): best on the proxy bench (median hypervolume
        # 0.4735 vs TPE 0.4589, 30 trials x 5 seeds, bench/bench_sampler.py) but worse on the real quickstart
        # (0.4675 vs 0.4774: it spends fine-tuned trials on deep cuts that score 0), and an ask costs seconds.
        return optuna.samplers.GPSampler(seed=seed)
    if s.name == "nsga2":
        # No better than its random first generation within the budgets our studies run (the same bench).
        return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=seed)
    # Optuna's own TPE, no tuned knobs (the default): the best on the real quickstart (1.50x the uniform
    # baselines' hypervolume), second on the proxy bench, and its asks take milliseconds; its 10 startup
    # trials are the enqueued baselines and warm starts when a study has them.
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def create_or_load(spec: StudySpec, storage) -> Any:
    """Create the study (and enqueue its baselines) or load it; objectives must match a study already there."""
    import optuna

    directions = spec.directions
    try:
        existing = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        names = existing.user_attrs.get("objectives")
        want = [o.metric for o in spec.objectives]
        have_dirs = [d.name.lower() for d in existing.directions]
        if (names is not None and names != want) or have_dirs != directions:
            raise OrchestratorError(
                f"study {spec.name!r} in the storage optimizes {names or have_dirs}, but {spec.path} asks for "
                f"{want}: rename the study (name:) or use another storage"
            )
        n = len(existing.get_trials(deepcopy=False))
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec, n))
        if STUDY_IDENTITY not in study.user_attrs:  # a study from before identities: it gets one now
            study.set_user_attr(STUDY_IDENTITY, _new_identity())
        return study
    study = optuna.create_study(
        study_name=spec.name, storage=storage, directions=directions, sampler=make_sampler(spec, 0), load_if_exists=True
    )
    study.set_user_attr("objectives", [o.metric for o in spec.objectives])
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use; its warning is noise on stderr
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in spec.objectives])  # optuna-dashboard shows them, not "Objective 0"
    if STUDY_IDENTITY not in study.user_attrs:  # (load_if_exists: another driver may have just created it)
        study.set_user_attr(STUDY_IDENTITY, _new_identity())
    return study


def study_identity(study) -> dict[str, str]:
    """Which Optuna study this is (``uid``, ``created``): a study recreated under the same name differs."""
    return dict(study.user_attrs.get(STUDY_IDENTITY) or {})


def _new_identity() -> dict[str, str]:
    import datetime
    import uuid

    return {
        "uid": uuid.uuid4().hex,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def load_existing(spec: StudySpec) -> Any:
    """The study as stored, for read-only commands; a clear error when it was never run."""
    import optuna

    storage = open_storage(spec.storage, create=False)
    try:
        return optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        raise OrchestratorError(
            f"no study named {spec.name!r} in {mask_url(spec.storage)}: start it with `orchestrator run {spec.path}`"
        ) from None


def enqueue_baselines(spec: StudySpec, study, space: SearchSpace) -> int:
    """Enqueue the uniform baselines once per study (before any searched trial)."""
    if study.user_attrs.get("baselines_enqueued"):
        return 0
    values = baseline_values(spec)
    for r in spec.baselines.ratios:
        params = space.enqueued_params(dict.fromkeys(space.ratios, r), values)
        study.enqueue_trial(params, user_attrs={ATTR_BASELINE: r, ATTR_INTENDED: params}, skip_if_exists=True)
    study.set_user_attr("baselines_enqueued", True)
    return len(spec.baselines.ratios)


def enqueue_warm_start(spec: StudySpec, study, space: SearchSpace, allocations: list[dict[str, float]]) -> int:
    """Enqueue the warm-start allocations (one per baseline ratio, same fine-tune budget) once per study."""
    if study.user_attrs.get("warm_start_enqueued"):
        return 0
    values = baseline_values(spec)
    for target, ratios in zip(spec.baselines.ratios, allocations):
        params = space.enqueued_params(ratios, values)
        attrs = {ATTR_WARM_START: target, ATTR_INTENDED: params}
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
    study.set_user_attr("warm_start_enqueued", True)
    return len(allocations)


def origin(t) -> str:
    """Who proposed a trial: ``uniform 0.3`` (a baseline), ``warm 0.3`` (the warm start) or ``sampler``."""
    if t.user_attrs.get(ATTR_BASELINE) is not None:
        return f"uniform {t.user_attrs[ATTR_BASELINE]:g}"
    if t.user_attrs.get(ATTR_WARM_START) is not None:
        return f"warm {t.user_attrs[ATTR_WARM_START]:g}"
    return "sampler"


# ---------------------------------------------------------------- front and hypervolume


def objective_values(spec: StudySpec, metrics: dict[str, float]) -> list[float]:
    return [float(metrics[o.metric]) for o in spec.objectives]


def feasible(trial) -> bool:
    """Every constraint the driver set (``Trial.set_constraint``; Optuna also reads the list earlier studies
    stored through ``constraints_func``) is met."""
    return all(v <= 0 for v in trial.constraints.values())


def pareto_front(trials: list, directions: list[str]) -> list:
    """The non-dominated COMPLETE, feasible trials (small n: a plain pairwise check)."""
    pts = [(t, _as_loss(t.values, directions)) for t in trials if _complete(t) and feasible(t)]
    front = []
    for t, a in pts:
        if not any(_dominates(b, a) for _, b in pts):
            front.append(t)
    return front


def hypervolume(trials: list, spec: StudySpec, baseline: dict[str, float]) -> float:
    """Hypervolume of the trials' front, each objective as a fraction of the unpruned baseline.

    Reference point: the baseline's cost for cost objectives (1.0) and zero quality for quality
    objectives, so the value reads "quality kept x cost saved" and compares searched vs uniform runs.
    """
    import numpy as np

    from .hypervolume import hypervolume as exact_hypervolume

    pts = [normalized_loss(t.values, spec, baseline) for t in trials if _complete(t) and feasible(t)]
    if not pts:
        return 0.0
    ref = np.array([0.0 if o.direction == "maximize" else 1.0 for o in spec.objectives])
    return exact_hypervolume(np.array(pts, dtype=float), ref)


def normalized_loss(values: list[float], spec: StudySpec, baseline: dict[str, float]) -> list[float]:
    out = []
    for v, o in zip(values, spec.objectives):
        base = baseline.get(o.metric) or 1.0
        out.append(-v / base if o.direction == "maximize" else v / base)
    return out


def hypervolume_history(trials: list, spec: StudySpec, baseline: dict[str, float]) -> list[tuple[int, float]]:
    """Hypervolume after each finished trial, in trial-number order."""
    done = sorted((t for t in trials if t.state.is_finished()), key=lambda t: t.number)
    out, seen = [], []
    for t in done:
        seen.append(t)
        out.append((t.number, hypervolume(seen, spec, baseline)))
    return out


def versus_uniform(trials: list, spec: StudySpec, baseline: dict[str, float]) -> dict[str, Any]:
    """Searched trials against the uniform baselines: each side's hypervolume, and who dominates them.

    "Searched" is every trial that is not a uniform baseline (warm-start allocations included); the
    ``*_sampled`` entries count only the trials the sampler proposed itself.
    """
    done = [t for t in trials if _complete(t) and feasible(t)]
    uniform = [t for t in done if t.user_attrs.get(ATTR_BASELINE) is not None]
    searched = [t for t in done if t.user_attrs.get(ATTR_BASELINE) is None]
    sampled = [t for t in searched if t.user_attrs.get(ATTR_WARM_START) is None]
    hv_u, hv_s = hypervolume(uniform, spec, baseline), hypervolume(searched, spec, baseline)
    losses = {t.number: _as_loss(t.values, spec.directions) for t in done}
    dominating = [
        s.number for s in searched if uniform and all(_dominates(losses[s.number], losses[u.number]) for u in uniform)
    ]
    return {
        "hypervolume_searched": hv_s,
        "hypervolume_uniform": hv_u,
        "ratio": hv_s / hv_u if hv_u > 0 else None,
        "dominate_every_uniform": dominating,
        # uniform trial -> the searched trials that dominate it
        "uniform_dominated_by": {
            u.number: [s.number for s in searched if _dominates(losses[s.number], losses[u.number])] for u in uniform
        },
        "hypervolume_sampled": hypervolume(sampled, spec, baseline),
        "uniform_dominated_by_sampled": {
            u.number: [s.number for s in sampled if _dominates(losses[s.number], losses[u.number])] for u in uniform
        },
    }


def failure_reason(t, study_attrs: dict[str, Any] | None = None) -> str:
    """Why a trial failed: its own attribute, or for a trial left RUNNING by a dead driver the study's record
    (Optuna has no public way to write to a trial another process asked; ``Study.tell`` takes a number)."""
    own = t.user_attrs.get(ATTR_FAILURE)
    if own:
        return own
    return ((study_attrs or {}).get(STUDY_ORPHAN_FAILURES) or {}).get(str(t.number), "")


def trial_summary(t, study_attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready record of one trial (status/pareto commands and the CSV); ``study_attrs`` for failure reasons."""
    return {
        "number": t.number,
        "state": t.state.name,
        "values": list(t.values) if t.values else None,
        "metrics": t.user_attrs.get(ATTR_METRICS, {}),
        "uniform_ratio": t.user_attrs.get(ATTR_BASELINE),
        "warm_start": t.user_attrs.get(ATTR_WARM_START),
        "origin": origin(t),
        "dimensions": {name: t.params.get(name) for name in DIMENSIONS},  # None: not a parameter of the study
        "ratios": trial_ratios(t.params),
        "failure": failure_reason(t, study_attrs),
        "device": t.user_attrs.get(ATTR_DEVICE, ""),
        "wall_s": t.user_attrs.get(ATTR_WALL),
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _complete(t) -> bool:
    return t.state.name == "COMPLETE" and t.values is not None


def _as_loss(values, directions: list[str]) -> tuple[float, ...]:
    return tuple(-v if d == "maximize" else v for v, d in zip(values, directions))


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
