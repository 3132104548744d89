"""The Optuna storage and the study in it: open, create or load (objectives checked), the sampler, identity.

Only the driver process talks to the Optuna storage (workers never do), so a SQLite file is safe for a
local study; clusters use PostgreSQL or a journal file on shared disk (``journal:///path/study.log``).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError
from ..study.spec import StudySpec
from ..study.stores import has_tables
from ..urls import mask_url
from .record import STUDY_IDENTITY, STUDY_OBJECTIVES


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
        names = existing.user_attrs.get(STUDY_OBJECTIVES)
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
    study.set_user_attr(STUDY_OBJECTIVES, [o.metric for o in spec.objectives])
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
