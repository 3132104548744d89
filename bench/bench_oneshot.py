"""What the one-shot screen sees on the REAL trial: the cut model's mAP50-95 before fine-tuning, and its cost.

    ORCHESTRATOR_ASSETS=../shared/assets .venv/bin/python bench/bench_oneshot.py [--random 10] [--json]

For the quickstart study (``--study``), the real trial's own screen step (``trial.runner.execute`` with a floor no
cut can reach, so every map stops after its one-shot validation) runs on: the uniform baselines, the warm-start
allocations (global magnitude) and ``--random`` per-group maps drawn uniformly on the study's ratio grid (seed 0:
what a sampler proposes before it has a model, and the kind of cut issue 24 found dead after fine-tuning).
Reported per map: mean ratio, sparsity, one-shot mAP50-95, whether ``screen.min_map`` (``--floor``) would stop
it, and the seconds the screen took (what a screened trial costs instead of a fine-tune).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from common import REPO

sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:

    from orchestrator.search import build_space
    from orchestrator.study.file import load_study_spec
    from orchestrator.trial.contract import AllocationRequest, TrialSpec, WorkerCache, Workload
    from orchestrator.trial.runner import execute, execute_allocations, execute_baseline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, default=REPO / "studies" / "yolov5n-coco128.yaml")
    p.add_argument("--random", type=int, default=10)
    p.add_argument("--floor", type=float, default=0.3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    spec = load_study_spec(args.study)
    workload, cache = Workload.from_spec(spec), WorkerCache()
    base = execute_baseline(workload, cache)
    space = build_space(spec, list(base.groups))
    targets = tuple(spec.baselines.ratios)
    request = AllocationRequest(targets, base.groups, dict(space.ratios), space.step)
    maps = [(f"uniform {t:g}", dict.fromkeys(space.ratios, t)) for t in targets]
    maps += [(f"warm {t:g}", m) for t, m in zip(targets, execute_allocations(workload, request, cache))]
    rng, step = random.Random(0), space.step or 0.05
    for i in range(args.random):
        maps.append(
            (
                f"random {i}",
                {g: lo + step * rng.randint(0, round((hi - lo) / step)) for g, (lo, hi) in space.ratios.items()},
            )
        )
    base_map = base.metrics["map50_95"]
    values = {"epochs": 1, "lr0": 0.0, "quantize": "none"}
    rows = []
    for n, (name, ratios) in enumerate(maps):
        t0 = time.perf_counter()
        r = execute(TrialSpec(n, workload, ratios, values, screen=(10.0, base_map)), cache, "bench")  # always stops
        took = time.perf_counter() - t0
        shot = r.metrics.get("map50_95", float("nan"))
        row = {
            "map": name,
            "mean_ratio": round(sum(ratios.values()) / len(ratios), 3),
            "sparsity": round(r.metrics.get("sparsity", float("nan")), 3),
            "oneshot_map50_95": round(shot, 4),
            "screened": shot < args.floor * base_map,
            "seconds": round(took, 1),
        }
        rows.append(row)
        print(row, flush=True)
    if args.json:
        print(json.dumps({"baseline_map50_95": base_map, "floor": args.floor, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
