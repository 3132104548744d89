"""``imgsz`` as a search dimension: the study file, the Optuna space, a fake study end to end, a real trial at a
smaller size timed against the unpruned model at the base size, and the size in the files it ships."""

from __future__ import annotations

import json

import pytest
from data_subsets import small_dataset
from study_files import fake_study, trial_runs

from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.search import baseline_values, build_space, load_existing
from orchestrator.study.dimensions import Choices
from orchestrator.study.file import load_study_spec
from orchestrator.sweep.driver import run_study
from orchestrator.trial.contract import TrialSpec, WorkerCache, Workload


def test_study_file_forms(tmp_path):
    plain = load_study_spec(fake_study(tmp_path, imgsz=320))
    assert plain.imgsz == 320 and plain.space["imgsz"] == Choices((320,))
    spec = load_study_spec(fake_study(tmp_path, imgsz=[320, 288, 256]))
    assert spec.imgsz == 320 and spec.space["imgsz"] == Choices((320, 288, 256))  # the first is the base


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([300], "imgsz[0]: must be a multiple of 32 (the largest stride) from 32 to 8192, got 300"),
        ([320, 320], "imgsz: lists a size twice"),
        ([], "imgsz: must be a size or a non-empty list of sizes"),
        ([320, "256"], "imgsz[1]: must be an integer size in pixels, got '256'"),
    ],
)
def test_bad_sizes_are_refused_naming_the_key(tmp_path, value, message):
    with pytest.raises(ConfigError) as e:
        load_study_spec(fake_study(tmp_path, imgsz=value))
    assert message in str(e.value)
    assert len(e.value.problems) == 1  # said once, not also as the base size


def test_check_refuses_300_in_one_line(tmp_path, capsys):
    path = fake_study(tmp_path, imgsz=[300])
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: imgsz[0]: must be a multiple of 32 (the largest stride) from 32 to 8192, got 300"]


def test_optuna_space_and_enqueued_trials(tmp_path):
    groups = ["model.0", "model.1"]
    plain_spec = load_study_spec(fake_study(tmp_path))
    assert "imgsz" not in build_space(plain_spec, groups).distributions()
    spec = load_study_spec(fake_study(tmp_path, imgsz=[320, 256]))
    space = build_space(spec, groups)
    assert space.distributions()["imgsz"].choices == (320, 256)
    # baselines and warm starts run at the base size: what the search is compared to
    assert space.enqueued_params(dict.fromkeys(groups, 0.3), baseline_values(spec))["imgsz"] == 320


def test_fake_study_searches_sizes_and_logs_them(tmp_path, capsys):
    spec = load_study_spec(fake_study(tmp_path, imgsz=[320, 256], budget={"n_trials": 8}))
    assert run_study(spec, live=False).complete == 8
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert {t.params["imgsz"] for t in trials} == {320, 256}
    runs = trial_runs(spec)
    assert all(runs[t.number].data.params["imgsz"] == str(t.params["imgsz"]) for t in trials)
    assert main(["status", str(spec.path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert {r["dimensions"]["imgsz"] for r in rows} == {320, 256}


def test_worker_cache_keeps_one_set_per_size(tmp_path):
    w = Workload.from_spec(load_study_spec(fake_study(tmp_path, imgsz=320)))
    cache = WorkerCache()
    cache.for_workload(w)["x"] = 1
    small = w.at_size(w.imgsz // 2)
    assert small.speed_imgsz == w.imgsz and small.at_size(w.imgsz // 2) is small
    assert cache.for_workload(small) == {}
    cache.for_workload(small)["x"] = 2
    assert cache.for_workload(w)["x"] == 1 and cache.for_workload(small)["x"] == 2
    from dataclasses import replace

    assert cache.for_workload(replace(w, study="other")) == {}  # another study drops them all


@pytest.mark.slow
def test_real_trial_at_a_smaller_size(tmp_path, assets):
    from orchestrator.trial.runner import execute, execute_baseline
    from orchestrator.yolo.checkpoint import load_checkpoint

    path = fake_study(
        tmp_path,
        trial="real",
        model=str(assets / "yolov5n.pt"),
        data=str(small_dataset(assets, tmp_path / "d", 8)),
        imgsz=[128, 64],
        device="cpu",
        pruning={"method": "unstructured", "granularity": "stage"},
    )
    w = Workload.from_spec(load_study_spec(path))
    cache = WorkerCache()
    base = execute_baseline(w, cache)
    values = {"epochs": 0, "lr0": 0.001, "quantize": "none"}
    ratios = dict.fromkeys(base.groups, 0.0)
    same = execute(TrialSpec(1, w, ratios, {**values, "imgsz": 128}), cache, "test")
    small = execute(TrialSpec(2, w, ratios, {**values, "imgsz": 64}), cache, "test")
    assert same.ok and small.ok, (same.failure, small.failure)
    # a quarter of the pixels: about a quarter of the FLOPs, and faster than the unpruned model at the base size
    assert small.metrics["gflops"] == pytest.approx(same.metrics["gflops"] / 4, rel=0.05)
    assert small.metrics["ort_speedup"] > 1.5 * same.metrics["ort_speedup"]
    assert small.metrics["map50_95"] != same.metrics["map50_95"]  # validated at its own size
    (tmp_path / "p.pt").write_bytes(small.files["pruned.pt"])
    assert load_checkpoint(tmp_path / "p.pt").meta["orchestrator_imgsz"] == 64
    assert json.loads(small.files["ratios.json"])["imgsz"] == 64


def test_measure_times_the_baseline_at_its_own_size(tmp_path, capsys, assets):
    w = str(assets / "yolov5n.pt")
    args = ["measure", "--weights", w, "--baseline", w, "--imgsz", "128", "--baseline-imgsz", "256"]
    assert main([*args, "--runs", "5", "--warmup", "1", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["baseline_imgsz"] == 256 and m["imgsz"] == 128
    assert m["ort_speedup"] > 1.5 and m["speedup"] > 1.2  # the same model on a quarter of the pixels
    assert main(["measure", "--weights", w, "--baseline-imgsz", "100"]) == 2
    assert "--baseline-imgsz: needs --baseline" in capsys.readouterr().err


def test_export_names_and_tags_the_size(tmp_path, assets, capsys):
    import onnx

    assert main(["export", "--weights", str(assets / "yolov5n.pt"), "--imgsz", "96", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["out"]
    assert out.endswith("yolov5n-96.onnx")
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["imgsz"] == "96"


def test_the_levers_alone_are_enqueued_once_and_tagged(tmp_path, capsys):
    """int8 at each size and the float model at each smaller size, unpruned, fewest epochs: heuristic points."""
    from orchestrator.search import is_warm_start, origin, ratios_of

    spec = load_study_spec(
        fake_study(tmp_path, imgsz=[320, 256], quantize={"choices": ["int8", "none"]}, budget={"n_trials": 7})
    )
    assert run_study(spec, live=False).complete == 7
    trials = load_existing(spec).get_trials(deepcopy=False)
    levers = [t for t in trials if origin(t).startswith("lever")]
    assert sorted(origin(t) for t in levers) == ["lever int8 @ 256", "lever int8 @ 320", "lever none @ 256"]
    for t in levers:
        assert is_warm_start(t) and t.params["epochs"] == 0
        assert set(ratios_of(t).values()) == {0.0}
    assert {(t.params["quantize"], t.params["imgsz"]) for t in levers} == {("int8", 256), ("int8", 320), ("none", 256)}
    # a resumed study does not enqueue them again
    spec = load_study_spec(
        fake_study(tmp_path, imgsz=[320, 256], quantize={"choices": ["int8", "none"]}, budget={"n_trials": 9})
    )
    run_study(spec, live=False)
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert sum(origin(t).startswith("lever") for t in trials) == 3
    assert main(["status", str(spec.path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert sorted(r["origin"] for r in rows if r["origin"].startswith("lever")) == sorted(origin(t) for t in levers)
