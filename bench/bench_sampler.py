"""Samplers compared on the quickstart's search space, with a cheap proxy trial (prune + validate, no fine-tune).

    ORCHESTRATOR_ASSETS=../shared/assets .venv/bin/python bench/bench_sampler.py \\
        --trials 30 --seeds 5 --samplers tpe,tpe-gamma,gp,nsga2,random [--json] [--cache /tmp/proxy.json]

The space, objectives, baselines and warm start come from the study file (``--study``, default the
quickstart ``studies/yolov5n-coco128.yaml``: 19 block ratios in 0..0.8 step 0.05, map50_95 max and
nonzero_params min). Every study (in-memory storage, one per sampler and seed) gets the 5 uniform
baselines enqueued first, then the 5 global-magnitude warm-start allocations, then sampler trials up to
``--trials`` in all (as ``budget.n_trials`` counts them). The proxy trial prunes the unpruned model with
the trial's ratios and validates it on the val split: the same pruning and metrics as a real trial,
without its fine-tune epoch, so the absolute figures are lower than a study's. Model and val images
are loaded once; results are cached by the exact ratio map (identical maps across samplers and seeds
are computed once; ``--cache`` keeps them in a JSON file across runs). Seeds are 0..seeds-1 (the
project's sampler seed), so a run is reproducible.

Reported per sampler, over seeds: the hypervolume of all trials with the project's reference point
(``search.hypervolume``: objectives as fractions of the unpruned model, reference (0 mAP, 1.0x
nonzeros)), searched/uniform hypervolume (``search.versus_uniform``, the README's 1.47x on the
fine-tuned quickstart), the hypervolume of the sampler's own trials, and the time spent in the sampler
(ask + tell) and in all (proxy evaluations of new ratio maps included). Warnings the sampler emits
(FutureWarning for deprecated arguments, ExperimentalWarning) are listed.

    tpe        TPESampler(seed=s, multivariate=True)                      Optuna's defaults, no gamma
    tpe-gamma  TPESampler(seed=s, multivariate=True, n_startup_trials=7, gamma=a quarter, <= 25)
                                                                          search.py's config until issue 13
    tpe-indep  TPESampler(seed=s)                                         independent TPE (Optuna's
                                                                          multi-objective default)
    gp         GPSampler(seed=s)                                          multi-objective since Optuna 4.4
    nsga2      NSGAIISampler(population_size=16, seed=s)                  the study file's population_size
    random     RandomSampler(seed=s)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))

SAMPLERS = ("tpe", "tpe-gamma", "tpe-indep", "gp", "nsga2", "random")


def _quarter_gamma(n: int) -> int:
    """The reference: ``search._front_gamma`` as it was when this benchmark was written (frozen here)."""
    return min(math.ceil(0.25 * n), 25)


def make_sampler(name: str, seed: int, spec):
    import optuna

    s = optuna.samplers
    if name == "tpe":
        return s.TPESampler(seed=seed, multivariate=True)
    if name == "tpe-gamma":
        n_startup = min(10, max(2, len(spec.baselines.ratios) + 2))
        return s.TPESampler(seed=seed, multivariate=True, n_startup_trials=n_startup, gamma=_quarter_gamma)
    if name == "tpe-indep":
        return s.TPESampler(seed=seed)
    if name == "gp":
        return s.GPSampler(seed=seed)
    if name == "nsga2":
        return s.NSGAIISampler(population_size=spec.sampler.population_size, seed=seed)
    if name == "random":
        return s.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


class Proxy:
    """Prune + validate, the model and val images loaded once; results cached by the exact ratio map."""

    def __init__(self, spec, weights: str, data: str, imgsz: int, cache_file: str | None):
        import torch

        from orchestrator.deploy.measure import count_nonzero
        from orchestrator.prune import apply_ratios, prunable_groups
        from orchestrator.yolo.checkpoint import load_checkpoint
        from orchestrator.yolo.data import load_data_config
        from orchestrator.yolo.train import VAL_BATCH
        from orchestrator.yolo.val import ValSet, validate

        self._apply, self._validate, self._nonzero = apply_ratios, validate, count_nonzero
        self.spec = spec
        self.model = load_checkpoint(weights).model.eval()
        stride = max(32, int(self.model.stride.max()))
        self.val = ValSet(load_data_config(data), imgsz, VAL_BATCH, stride=stride)
        self.device = torch.device("cpu")
        p = spec.pruning
        method = "structured" if p.method == "structured" else "unstructured"
        self.groups = prunable_groups(self.model, p.granularity, p.exclude, method=method)
        self.cache_file = Path(cache_file) if cache_file else None
        self.cache: dict[str, list[float]] = {}
        self.key_prefix = f"{Path(weights).name}|{Path(data).name}|{imgsz}|{p.method}|{p.granularity}|{p.importance}|"
        if self.cache_file and self.cache_file.is_file():
            self.cache = json.loads(self.cache_file.read_text())
        self.computed = 0
        self.compute_s = 0.0

    def key(self, ratios: dict[str, float]) -> str:
        return self.key_prefix + json.dumps({g: round(float(r), 10) for g, r in sorted(ratios.items())})

    def __call__(self, ratios: dict[str, float]) -> dict[str, float]:
        k = self.key(ratios)
        if k not in self.cache:
            t0 = time.perf_counter()
            m = copy.deepcopy(self.model)  # as the real trial does
            if ratios:
                p = self.spec.pruning
                self._apply(m, ratios, method=p.method, granularity=p.granularity, importance=p.importance)
            res = self._validate(m, self.val, device=self.device)
            self.cache[k] = [float(res.map50_95), float(self._nonzero(m)[1])]
            self.compute_s += time.perf_counter() - t0
            self.computed += 1
            if self.cache_file:
                self.cache_file.write_text(json.dumps(self.cache))
        map50_95, nonzero = self.cache[k]
        return {"map50_95": map50_95, "nonzero_params": nonzero}


def run_one(name: str, seed: int, spec, space, proxy: Proxy, warm: list[dict[str, float]], n_trials: int):
    """One in-memory study: baselines, warm starts, then the sampler; returns its trials and times."""
    import optuna
    import torch

    from orchestrator.search import ATTR_BASELINE, ATTR_WARM_START
    from orchestrator.study.dimensions import RATIO_PREFIX, trial_ratios

    torch.manual_seed(seed)
    dists = {k: v for k, v in space.distributions().items() if k.startswith(RATIO_PREFIX)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t_all = time.perf_counter()
        study = optuna.create_study(directions=spec.directions, sampler=make_sampler(name, seed, spec))
        for r in spec.baselines.ratios:
            study.enqueue_trial({RATIO_PREFIX + g: r for g in space.ratios}, user_attrs={ATTR_BASELINE: r})
        for target, ratios in zip(spec.baselines.ratios, warm):
            params = {RATIO_PREFIX + g: float(v) for g, v in ratios.items()}
            study.enqueue_trial(params, user_attrs={ATTR_WARM_START: target})
        sampler_s = 0.0
        for _ in range(n_trials):
            t0 = time.perf_counter()
            trial = study.ask(dists)
            sampler_s += time.perf_counter() - t0
            metrics = proxy(trial_ratios(trial.params))
            t0 = time.perf_counter()
            study.tell(trial, [metrics[o.metric] for o in spec.objectives])
            sampler_s += time.perf_counter() - t0
        wall = time.perf_counter() - t_all
    seen = {(w.category.__name__, str(w.message).splitlines()[0]) for w in caught}
    return study.get_trials(deepcopy=False), sampler_s, wall, sorted(seen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--study", default=str(REPO / "studies" / "yolov5n-coco128.yaml"))
    p.add_argument("--trials", type=int, default=30, help="trials per study, the 10 enqueued ones included")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..seeds-1 per sampler")
    p.add_argument("--samplers", default="tpe,tpe-gamma,gp,nsga2,random", help=f"from {', '.join(SAMPLERS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=None, help="JSON file keeping proxy results across runs")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    names = [s.strip() for s in a.samplers.split(",") if s.strip()]
    for n in names:
        if n not in SAMPLERS:
            p.error(f"unknown sampler {n!r}; choose from {', '.join(SAMPLERS)}")

    import optuna
    import torch

    from orchestrator.prune import magnitude_allocation
    from orchestrator.search import build_space, hypervolume, versus_uniform
    from orchestrator.study.file import load_study_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(a.threads)
    spec = load_study_spec(a.study)
    proxy = Proxy(spec, a.weights, a.data, a.imgsz, a.cache)
    space = build_space(spec, list(proxy.groups))
    groups = {g: list(proxy.groups[g]) for g in space.ratios}
    warm = [magnitude_allocation(proxy.model, groups, t, dict(space.ratios), space.step) for t in spec.baselines.ratios]
    n_enqueued = len(spec.baselines.ratios) + len(warm)
    if a.trials < n_enqueued:
        p.error(f"--trials must be at least the {n_enqueued} enqueued trials")

    # the unpruned model and the enqueued trials first, so no sampler's wall time pays for them
    baseline = proxy({})
    for r in spec.baselines.ratios:
        proxy(dict.fromkeys(space.ratios, r))
    for w in warm:
        proxy(w)
    per_trial_s = proxy.compute_s / proxy.computed if proxy.computed else None
    log(f"{len(groups)} groups; unpruned {baseline}; proxy trial {per_trial_s or 0:.1f} s ({proxy.computed} computed)")

    rows = []
    for name in names:
        runs, wall, sampler_s, new, caught = [], 0.0, 0.0, proxy.computed, set()
        for seed in range(a.seeds):
            trials, s_s, w_s, seen = run_one(name, seed, spec, space, proxy, warm, a.trials)
            vs = versus_uniform(trials, spec, baseline)
            hv = hypervolume(trials, spec, baseline)
            runs.append({"seed": seed, "hypervolume": hv, "ratio": vs["ratio"], "sampled": vs["hypervolume_sampled"]})
            wall, sampler_s = wall + w_s, sampler_s + s_s
            caught.update(seen)
            ratio = vs["ratio"] or 0
            log(f"{name} seed {seed}: hv {hv:.4f} (searched/uniform {ratio:.3f}) {w_s:.0f} s, sampler {s_s:.1f} s")
        rows.append(
            {
                "sampler": name,
                "runs": runs,
                "wall_s": wall,
                "sampler_s": sampler_s,
                "proxy_computed": proxy.computed - new,
                "warnings": [f"{c}: {m}" for c, m in sorted(caught)],
            }
        )
    enqueued = [proxy(dict.fromkeys(space.ratios, r)) for r in spec.baselines.ratios] + [proxy(w) for w in warm]
    floor = [optuna.trial.create_trial(values=[m[o.metric] for o in spec.objectives]) for m in enqueued]
    out = {
        "study": a.study,
        "trials": a.trials,
        "seeds": a.seeds,
        "baseline": baseline,
        "enqueued": enqueued,
        "enqueued_hypervolume": hypervolume(floor, spec, baseline),  # what every study starts from
        "proxy_trial_s": (proxy.compute_s / proxy.computed) if proxy.computed else None,
        "proxy_computed": proxy.computed,
        "optuna": optuna.__version__,
        "samplers": rows,
    }
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print_table(out)
    return 0


def _med(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):.4f} ({min(xs):.4f}-{max(xs):.4f})"


def print_table(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"{out['trials']} trials x {out['seeds']} seeds, proxy trial (prune + validate, no fine-tune), "
        f"Optuna {out['optuna']}: median (min-max)"
    )
    for c in ("sampler", "hypervolume", "searched/uniform", "sampler's own trials", "sampler s", "wall s", "new maps"):
        t.add_column(c, justify="left" if c == "sampler" else "right")
    for r in out["samplers"]:
        t.add_row(
            r["sampler"],
            _med([x["hypervolume"] for x in r["runs"]]),
            _med([x["ratio"] for x in r["runs"]]),
            _med([x["sampled"] for x in r["runs"]]),
            f"{r['sampler_s']:.1f}",
            f"{r['wall_s']:.0f}",
            str(r["proxy_computed"]),
        )
    c = Console()
    c.print(t)
    c.print(
        f"the {len(out['enqueued'])} enqueued trials alone: hypervolume {out['enqueued_hypervolume']:.4f}; "
        f"unpruned {out['baseline']}; proxy trial {out['proxy_trial_s'] or 0:.2f} s, "
        f"{out['proxy_computed']} ratio maps computed (newly, this run)"
    )
    for r in out["samplers"]:
        for w in r["warnings"]:
            c.print(f"{r['sampler']}: {w}", markup=False, highlight=False)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
