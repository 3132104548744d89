"""Per-trial overhead of the study loop (dispatch, Optuna, MLflow logging, artifacts, plots) vs trial wall time.

Runs a fake-trial study (each trial sleeps ``--sleep`` seconds and returns a ``--checkpoint-kb`` checkpoint)
on one slot, so trials run back to back, then reads the Optuna storage: the time between the first
trial's start and the last trial's end that the trials themselves did not use is the loop's overhead.
Worst case on purpose: every checkpoint is logged (artifacts: all) and the Pareto plots refresh every trial.

    .venv/bin/python bench/bench_overhead.py --trials 8 --sleep 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=10.0, help="seconds per trial (a real CPU trial: 20-60 s)")
    ap.add_argument("--checkpoint-kb", type=int, default=4000, help="checkpoint size (yolov5n fp16: ~3.9 MB)")
    ap.add_argument("--granularity", default="layer", help="layer = most params per trial run (worst case)")
    ap.add_argument("--limit", type=float, default=0.05, help="fail (exit 1) above this overhead fraction")
    args = ap.parse_args(argv)

    import optuna

    from orchestrator.study.file import load_study_spec
    from orchestrator.sweep.driver import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        folder = Path(tmp)
        doc = {
            "name": "bench-overhead",
            "model": "yolov5n.pt",
            "data": "coco128.yaml",
            "trial": "fake",
            "fake": {"sleep_s": args.sleep, "checkpoint_kb": args.checkpoint_kb},
            "pruning": {"granularity": args.granularity},
            "finetune": {"epochs": {"min": 0, "max": 3}, "lr0": {"min": 0.001, "max": 0.01}},
            "objectives": [{"metric": "map50_95"}, {"metric": "gflops"}, {"metric": "latency_ms"}],
            "baselines": {"ratios": [0.1, 0.3]},
            "budget": {"n_trials": args.trials},
            "resources": {"max_concurrent": 1, "num_cpus": 1},
            "storage": f"sqlite:///{folder}/mlruns/optuna.db",
            "tracking": {
                "uri": f"sqlite:///{folder}/mlruns/mlflow.db",
                "artifact_location": f"{folder}/mlruns/art",
                "artifacts": "all",
                "refresh_s": 0,
            },
        }
        (folder / "bench.yaml").write_text(yaml.safe_dump(doc))
        spec = load_study_spec(folder / "bench.yaml")
        run_study(spec, live=False)
        trials = optuna.load_study(study_name=spec.name, storage=spec.storage).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    inside = sum(t.user_attrs["wall_s"] for t in done)
    # the last trial's logging happens after its datetime_complete: add one trial's share
    per_trial = (span - inside) / (len(done) - 1) if len(done) > 1 else float("nan")
    fraction = per_trial / (inside / len(done) + per_trial)
    out = {
        "trials": len(done),
        "sleep_s": args.sleep,
        "checkpoint_kb": args.checkpoint_kb,
        "groups": len([k for k in done[0].params if k.startswith("ratio.")]),
        "overhead_s_per_trial": round(per_trial, 3),
        "overhead_fraction": round(fraction, 4),
    }
    print(json.dumps(out))
    print(
        f"overhead per trial: {per_trial * 1000:.0f} ms = {fraction:.1%} of a {args.sleep:g} s trial "
        f"(limit {args.limit:.0%})",
        file=sys.stderr,
    )
    return 0 if fraction <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
