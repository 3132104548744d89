"""``quantize`` as a search dimension: the study file, the Optuna space, a fake study end to end, a real trial."""

from __future__ import annotations

import pytest
from data_subsets import small_dataset
from study_files import fake_study, trial_runs

from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.search import baseline_values, build_space, load_existing
from orchestrator.study.dimensions import Choices
from orchestrator.study.file import load_study_spec
from orchestrator.study.spec import QuantizeSpec
from orchestrator.sweep.driver import run_study
from orchestrator.trial.contract import Workload


def test_study_file_forms(tmp_path):
    plain = load_study_spec(fake_study(tmp_path))  # not named: no int8, no parameter
    assert plain.quantize == QuantizeSpec() and plain.space["quantize"] == Choices(("none",))
    spec = load_study_spec(fake_study(tmp_path, quantize=["none", "int8"]))
    assert spec.space["quantize"] == Choices(("none", "int8"))
    q = spec.quantize  # the defaults: bench/bench_int8.py's most accurate fast form (docs/deploy.md)
    assert (q.calibration, q.calib_images, q.per_channel, q.float_layers) == ("percentile", 128, False, (0,))
    doc = {"choices": ["int8"], "calibration": "minmax", "calib_images": 16, "per_channel": True, "float_layers": []}
    spec = load_study_spec(fake_study(tmp_path, quantize=doc))
    assert spec.quantize == QuantizeSpec("minmax", 16, True, ()) and spec.space["quantize"] == Choices(("int8",))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["int4"], "quantize: must list choices among none, int8, got 'int4'"),
        ([], "quantize: must list at least one of none, int8"),
        (["int8", "int8"], "quantize: lists a choice twice"),
        ({"choices": ["int8"], "calib_images": 0}, "quantize.calib_images: must be >= 1"),
        ({"choices": ["int8"], "calibration": "median"}, "quantize.calibration: "),
        ({"choices": ["int8"], "bits": 4}, "quantize.bits: unknown key"),
        ({"choices": ["int8"], "float_layers": [0, -1]}, "quantize.float_layers: must be layer indices >= 0"),
        ({"choices": ["int8"], "per_channel": "yes"}, "quantize.per_channel: "),
    ],
)
def test_bad_quantize_is_refused_naming_the_key(tmp_path, value, message):
    path = fake_study(tmp_path, quantize=value)
    with pytest.raises(ConfigError) as e:
        load_study_spec(path)
    assert message in str(e.value)


def test_check_refuses_int4_in_one_line(tmp_path, capsys):
    path = fake_study(tmp_path, quantize=["none", "int4"])
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: quantize: must list choices among none, int8, got 'int4'"]


def test_optuna_space_and_enqueued_trials(tmp_path):
    groups = ["model.0", "model.1"]
    plain_spec = load_study_spec(fake_study(tmp_path))
    plain = build_space(plain_spec, groups)
    uniform = dict.fromkeys(groups, 0.3)
    assert "quantize" not in plain.distributions()
    assert "quantize" not in plain.enqueued_params(uniform, baseline_values(plain_spec))
    spec = load_study_spec(fake_study(tmp_path, quantize=["none", "int8"]))
    space = build_space(spec, groups)
    assert space.distributions()["quantize"].choices == ("none", "int8")
    assert space.enqueued_params(uniform, baseline_values(spec))["quantize"] == "int8"  # the last choice
    q = Workload.from_spec(spec).quantize
    assert (q.calibration, q.calib_images, q.per_channel, q.float_layers) == ("percentile", 128, False, (0,))


def test_fake_study_searches_quantize_and_logs_it(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, quantize=["none", "int8"], budget={"n_trials": 6}))
    assert run_study(spec, live=False).complete == 6
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert [t.params["quantize"] for t in trials[:2]] == ["int8", "int8"]  # the uniform baselines
    assert {t.params["quantize"] for t in trials} <= {"none", "int8"}
    runs = trial_runs(spec)
    assert all(runs[t.number].data.params["quantize"] == t.params["quantize"] for t in trials)
    assert all("ort_latency_ms" in runs[t.number].data.metrics for t in trials)


@pytest.mark.slow
def test_real_int8_trial_validates_and_ships_the_int8_file(tmp_path, assets):
    from orchestrator.deploy.onnx_model import inspect_onnx
    from orchestrator.deploy.onnx_val import validate_onnx_bytes
    from orchestrator.trial.contract import TrialSpec, WorkerCache
    from orchestrator.trial.runner import execute, execute_baseline

    path = fake_study(
        tmp_path,
        trial="real",
        model=str(assets / "yolov5n.pt"),
        data=str(assets / "coco128.yaml"),
        imgsz=64,
        device="cpu",
        pruning={"method": "unstructured", "granularity": "stage"},
        quantize={"choices": ["none", "int8"], "calib_images": 4},
        test_data=str(small_dataset(assets, tmp_path / "held_out", 6)),
    )
    w = Workload.from_spec(load_study_spec(path))
    cache = WorkerCache()
    base = execute_baseline(w, cache)
    ratios = {g: 0.2 for g in base.groups}
    r = execute(TrialSpec(1, w, ratios, {"epochs": 0, "lr0": 0.001, "quantize": "int8"}), cache, "test")
    assert r.ok, r.failure
    q = r.files["pruned.int8.onnx"]
    (tmp_path / "q.onnx").write_bytes(q)
    assert inspect_onnx(tmp_path / "q.onnx").int8 and "pruned.pt" in r.files
    from orchestrator.deploy.ort_graph import optimized_ops

    assert optimized_ops(q).float_convs == 1  # the study's default form: the first layer float
    assert r.metrics["size_mb"] == pytest.approx(len(q) / 1e6)  # the deployable file's bytes
    assert r.metrics["size_mb"] < 0.75 * base.metrics["size_mb"]  # int8 vs the fp16 official .pt
    ctx = cache.items["context"]
    assert {"calibration", "test_set"} <= ctx.built()  # the worker keeps both for its next trials
    # the mAP reported is the int8 file's own, through ONNX Runtime
    assert r.metrics["map50_95"] == pytest.approx(validate_onnx_bytes(q, ctx.val_set).map50_95)
    assert r.metrics["ort_latency_ms"] > 0 and len(ctx.calibration(4)) == 4
    # the held-out figures are the int8 file's too
    assert r.test["test_map50_95"] == pytest.approx(validate_onnx_bytes(q, ctx.test_set(32, tuple)).map50_95)
