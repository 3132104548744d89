"""The search itself measured on the REAL trial: today's TPE, TPE + one-shot screen, the relative space, both.

    ORCHESTRATOR_ASSETS=../shared/assets .venv/bin/python bench/bench_search.py \\
        --variants tpe,screen,relative,both --seeds 0,1,2 --trials 32 --out /tmp/bench-search [--json]

Each variant is a copy of the study file (``--study``, default the quickstart) with its own Optuna and MLflow
stores under ``--out``, run to ``--trials`` COMPLETE trials by ``python -m orchestrator run`` (the same command a
user runs, Ray and MLflow included: the wall time is what a user waits). A variant whose store already exists is
resumed, not rerun, so a bench cut short goes on where it stopped. Each seed is the sampler's seed (``sampler.seed``);
the training seed stays the study's, so the five warm starts are the same trials in every run.

    tpe       the study as shipped
    screen    + ``screen: {min_map: 0.3}``: a sampler trial whose one-shot mAP50-95 (before fine-tuning) is
              under 0.3x the unpruned model's stops there
    relative  + ``sampler.space: relative``: one level plus per-group offsets around the warm-start allocation
    both      screen and relative

Reported per variant, from the Optuna storage: the hypervolume on val (``search.hypervolume``: objectives as
fractions of the unpruned model) and its ratio to the warm starts' alone, how many of the sampler's fine-tuned
trials ended under half the unpruned mAP50-95, how many were screened, and the wall time of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ASSETS, REPO, TreeCPU

sys.path.insert(0, str(REPO))

VARIANTS = {
    "tpe": {},
    "screen": {"screen": {"min_map": 0.3}},
    "relative": {"sampler": {"space": "relative"}},
    "both": {"screen": {"min_map": 0.3}, "sampler": {"space": "relative"}},
}


def variant_file(study: Path, name: str, out: Path, trials: int, seed: int) -> Path:
    """The study file with the variant's settings, its own stores, the sampler's seed and ``trials`` as budget."""
    import yaml

    doc = yaml.safe_load(study.read_text())
    for key, value in VARIANTS[name].items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) and key in doc else value
    doc["sampler"] = {**doc.get("sampler", {}), "seed": seed}
    folder = out / f"{name}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    doc["name"] = f"{doc['name']}-{name}-s{seed}"
    doc["storage"] = f"sqlite:///{folder / 'optuna.db'}"
    doc["tracking"] = {**doc.get("tracking", {}), "uri": f"sqlite:///{folder / 'mlflow.db'}"}
    doc["budget"] = {**doc.get("budget", {}), "n_trials": trials}
    doc["model"], doc["data"] = str(ASSETS / doc["model"]), str(ASSETS / doc["data"])
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_variant(path: Path) -> tuple[float, float]:
    """``orchestrator run`` on the variant's file; its wall and CPU seconds (the run, its Ray workers and their
    loader processes), added to those of earlier, resumed runs."""
    log = path.parent / "run.log"
    timing, cpu_file = path.parent / "wall_s.txt", path.parent / "cpu_s.txt"
    before = float(timing.read_text()) if timing.exists() else 0.0
    cpu_before = float(cpu_file.read_text()) if cpu_file.exists() else 0.0
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCHESTRATOR_ASSETS": str(ASSETS)}
    t0 = time.perf_counter()
    with log.open("a") as f:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(path)], env=env, stdout=f, stderr=f)
        cpu = TreeCPU(proc.pid)
        try:
            code = proc.wait()
        finally:  # an interrupted run's time counts too: the next one resumes it
            timing.write_text(f"{before + time.perf_counter() - t0:.1f}")
            cpu_file.write_text(f"{cpu_before + cpu.stop():.1f}")
    if code:
        raise SystemExit(f"{path}: orchestrator run exited {code} (see {log})")
    return float(timing.read_text()), float(cpu_file.read_text())


def summarize(path: Path, wall: float, cpu: float | None) -> dict:
    """What the variant reached, read back from its Optuna storage."""
    import optuna

    from orchestrator.search import hypervolume, origin
    from orchestrator.search.record import STUDY_BASELINE, is_screened
    from orchestrator.study.file import load_study_spec

    spec = load_study_spec(path)
    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    trials = study.get_trials(deepcopy=False)
    base = study.user_attrs[STUDY_BASELINE]["metrics"]
    half = 0.5 * base["map50_95"]
    sampler = [t for t in trials if origin(t) == "sampler" and t.state.name == "COMPLETE"]
    tuned = [t for t in sampler if not is_screened(t)]
    warm = [t for t in trials if origin(t).startswith("warm") and t.state.name == "COMPLETE"]
    hv, hv_warm = hypervolume(trials, spec, base), hypervolume(warm, spec, base)
    seconds = {  # each trial's own wall time, from Optuna's start and end stamps
        t.number: (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete and t.datetime_start
    }
    screen_s = sum(seconds.get(t.number, 0.0) for t in sampler if is_screened(t))
    return {
        "hypervolume": round(hv, 4),
        "vs_warm": round(hv / hv_warm, 3) if hv_warm else None,
        "sampler_tuned": len(tuned),
        "under_half": sum(t.values[0] < half for t in tuned),
        "screened": len(sampler) - len(tuned),
        "trials_s": round(sum(seconds.values()), 1),  # all trials, screened ones included
        "screens_s": round(screen_s, 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1) if cpu is not None else None,  # None: run before the bench measured CPU
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, default=REPO / "studies" / "yolov5n-coco128.yaml")
    p.add_argument("--variants", default="tpe,screen,relative,both")
    p.add_argument("--seeds", default="0", help="sampler seeds, comma-separated: one run per variant and seed")
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-search"))
    p.add_argument("--summary-only", action="store_true", help="read the stores, run nothing")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = {}
    runs = [(s, n) for s in args.seeds.split(",") for n in args.variants.split(",")]  # seed-major: all variants early
    for seed, name in runs:
        path = variant_file(args.study, name, args.out, args.trials, int(seed))
        timing, cpu_file = path.parent / "wall_s.txt", path.parent / "cpu_s.txt"
        if not args.summary_only:
            run_variant(path)
        elif not timing.exists():
            continue  # not run yet
        cpu = float(cpu_file.read_text()) if cpu_file.exists() else None
        rows[f"{name}-s{seed}"] = summarize(path, float(timing.read_text()), cpu)
        print(name, seed, rows[f"{name}-s{seed}"], flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        head = f"{'variant':12} {'HV':>7} {'xwarm':>6} {'tuned':>6} {'<half':>6} {'screened':>9} {'trials s':>9}"
        print(head + f" {'screens s':>9} {'wall s':>7} {'cpu s':>7}")
        for name, r in rows.items():
            print(
                f"{name:12} {r['hypervolume']:7.4f} {r['vs_warm'] or 0:6.3f} {r['sampler_tuned']:6d} "
                f"{r['under_half']:6d} {r['screened']:9d} {r['trials_s']:9.1f} {r['screens_s']:9.1f} "
                f"{r['wall_s']:7.1f} {r['cpu_s'] or 0:7.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
