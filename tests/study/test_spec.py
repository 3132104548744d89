"""Study files: every problem reported at once with its key path; good files load into frozen specs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from study_files import fake_study

from orchestrator.errors import ConfigError
from orchestrator.study.file import load_study_spec
from orchestrator.study.metrics import OBJECTIVES as METRICS

REPO = Path(__file__).resolve().parents[2]
GOOD = """
name: s
model: yolov5n.pt
data: coco128.yaml
"""


def _load(tmp_path, text: str):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    return load_study_spec(p), p


def _problems(tmp_path, text: str) -> list[str]:
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_study_spec(p)
    lines = str(e.value).splitlines()
    assert all(line.startswith(f"{p}: ") for line in lines)
    return [line[len(f"{p}: ") :] for line in lines]


def test_defaults_and_types(tmp_path):
    spec, p = _load(tmp_path, GOOD)
    assert spec.name == "s" and spec.path == p and spec.imgsz == 640
    assert [(o.metric, o.direction) for o in spec.objectives] == [("map50_95", "maximize"), ("gflops", "minimize")]
    assert spec.sampler.name == "tpe"  # also with 2+ objectives (the sampler bench and the quickstart)
    assert spec.storage == "sqlite:///mlruns/optuna.db" and spec.tracking.uri == "sqlite:///mlruns/mlflow.db"
    assert spec.experiment == "s" and spec.text.strip() == GOOD.strip()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "t"


def test_full_file_loads(tmp_path):
    spec, _ = _load(
        tmp_path,
        GOOD
        + """
pruning: {method: unstructured, granularity: layer, ratio: 0.3, groups: {"model.2*": {max: 0.1}}, exclude: [model.0]}
finetune: {epochs: 4, lr0: {min: 0.0001, max: 0.01}, overrides: {mosaic: 0.0}}
objectives: [map50, {metric: size_zip_mb, direction: minimize}]
constraints: ["map50 >= 0.9 * baseline", "size_zip_mb <= 2.5"]
sampler: {name: tpe, seed: 3}
budget: {n_trials: null, timeout_s: 3600}
resources: {gpus_per_trial: 0.5, address: "ray://head:10001"}
""",
    )
    assert spec.pruning.ratio.low == spec.pruning.ratio.high == 0.3
    assert spec.pruning.groups[0].pattern == "model.2*" and spec.pruning.groups[0].ratio.high == 0.1
    assert spec.space["epochs"].fixed and spec.space["lr0"].log
    c0, c1 = spec.constraints
    assert (c0.metric, c0.op, c0.value, c0.relative) == ("map50", ">=", 0.9, True)
    assert c0.violation({"map50": 0.45}, {"map50": 0.5}) == pytest.approx(0.0)
    assert c1.violation({"size_zip_mb": 3.0}, {}) == pytest.approx(0.5)  # > 0: violated by 0.5 MB
    assert spec.budget.n_trials is None and spec.budget.timeout_s == 3600
    assert spec.resources.address == "ray://head:10001"


def test_every_problem_is_reported_at_once(tmp_path):
    problems = _problems(
        tmp_path,
        """
name: bad name
model: yolov5n.pt
imgsz: 300
pruning: {method: channel, ratio: {min: 0.5, max: 1.2}, methd: x, groups: {model.2: {min: 0.3, max: 0.1}}}
finetune: {epochs: {min: 3, max: 1}, lr0: -1, hyp: nope, overrides: {momentm: 0.9, lr0: 0.1}}
objectives: [{metric: size}, {metric: params, direction: maximize}, map50_95, map50_95]
constraints: ["map50_95 > 3", "recall >= 0.5"]
sampler: {name: cmaes}
budget: {n_trials: 0}
resources: {address: nope, cpus_per_trial: 0}
tracking: {artifacts: some, uri: mlflow.db}
bogus: 1
""",
    )
    assert problems == [
        "name: must be letters, digits, '_', '-', '.', at most 214 characters (MLflow's tag keys hold 250, with the "
        "prefix 'mlflow.sharedViewState.orchestrator-'), got 'bad name'",
        "data: missing (a string expected)",
        "imgsz: must be a multiple of 32 from 32 to 8192, got 300",
        "pruning.method: must be one of structured, unstructured, got 'channel'",
        "pruning.ratio.max: must be < 1, got 1.2",
        "pruning.groups.model.2: min <= max must hold, got min=0.3 max=0.1",
        "pruning.methd: unknown key (did you mean 'method'?)",
        "finetune.hyp: must be one of scratch-low, finetune, got 'nope'",
        "finetune.epochs: min <= max must hold, got min=3 max=1",
        "finetune.lr0: must be > 0, got -1",
        "finetune.overrides.momentm: unknown hyp key (did you mean 'momentum'?)",
        "finetune.overrides.lr0: set finetune.lr0 instead (it may be searched)",
        f"objectives[0].metric: must be one of {', '.join(METRICS)}, got 'size'",
        "objectives[1].direction: params is better when lower: must be minimize, got maximize",
        "objectives[3].metric: map50_95 is listed twice",
        "budget.n_trials: must be >= 1, got 0",
        "resources.cpus_per_trial: must be >= 1, got 0",
        "resources.address: must be auto, host:port or ray://host:port, got 'nope'",
        "tracking.uri: must be an MLflow tracking URI (sqlite, postgresql, mysql, http, https), got 'mlflow.db'",
        "tracking.artifacts: must be one of all, pareto, none, got 'some'",
        "constraints[0]: must read '<metric> >= <number>[ * baseline]' (or <=), got 'map50_95 > 3'",
        f"constraints[1]: unknown metric 'recall', expected one of: {', '.join(METRICS)}",
        "sampler.name: must be one of gp, tpe, nsga2, random, got 'cmaes'",
        "bogus: unknown key",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pruning: {ratio: {min: -0.1}}", "pruning.ratio.min: must be >= 0, got -0.1"),
        ("pruning: {ratio: 1}", "pruning.ratio: must be < 1, got 1"),
        ("pruning: {ratio: [0.1, 0.2]}", "pruning.ratio: must be a number or {min, max}, got a list [0.1, 0.2]"),
        (
            "pruning: {method: unstructured, importance: bn_scale}",
            "pruning.importance: bn_scale ranks whole channels: use it with method structured, or l1/l2",
        ),
        ("pruning: [1]", "pruning: must be a mapping of keys, got a list [1]"),
        ("imgsz: '640'", "imgsz: must be an integer, got '640'"),
        ("batch: true", "batch: must be an integer, got true"),
        ("device: gpu", "device: must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("objectives: []", "objectives: must be a non-empty list of {metric, direction}, got a list []"),
        ("budget: {n_trials: null}", "budget: give n_trials, timeout_s or both (the study must end)"),
        ("baselines: {ratios: [0.1, 1.5]}", "baselines.ratios[1]: must be >= 0 and < 1, got 1.5"),
        ("trial: pretend", "trial: must be one of real, fake, got 'pretend'"),
        (
            "sampler: {warm_start: lamp}",
            "sampler.warm_start: must be one of none, global_magnitude, sensitivity, latency, got 'lamp'",
        ),
        (
            "pruning: {method: unstructured}\nbaselines: {ratios: []}\nsampler: {warm_start: global_magnitude}",
            "sampler.warm_start: pairs one allocation with each uniform baseline: baselines.ratios is empty",
        ),
        (
            "pruning: {method: structured}\nsampler: {warm_start: global_magnitude}",
            "sampler.warm_start: global_magnitude allocates single weights: it needs pruning.method unstructured",
        ),
        ("fake: {kill_on: [x]}", "fake.kill_on[0]: must be an integer, got 'x'"),
    ],
)
def test_single_problems(tmp_path, text, problem):
    assert _problems(tmp_path, GOOD + text + "\n") == [problem]


def test_not_yaml_and_not_a_mapping(tmp_path):
    assert _problems(tmp_path, "name: [unclosed\n")[0].startswith("line 2: not valid YAML")
    assert _problems(tmp_path, "- a\n- b\n") == ["must be a mapping of keys, got list"]
    with pytest.raises(ConfigError, match="study file not found"):
        load_study_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize("study", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_load(study):
    spec = load_study_spec(study)
    assert spec.trial == "real" and spec.budget.n_trials >= 8  # the int8 study: 8 trials of 5 distilled epochs


def test_check_command_writes_nothing(tmp_path):
    from study_files import fake_study

    path = fake_study(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "check", str(path), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert '"study": "fake"' in out.stdout
    assert sorted(tmp_path.rglob("*")) == before  # no Optuna study, no MLflow run, no mlruns/


def test_check_command_reports_bad_files_with_exit_code_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD + "pruning: {ratio: {max: 1.2}}\n")
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "check", str(p)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {p}: pruning.ratio.max: must be < 1, got 1.2"
    assert not (tmp_path / "mlruns").exists()


def test_structured_recovery_and_distill_keys(tmp_path):
    from study_files import fake_study

    pruning = {"method": "structured", "importance": "output_error", "recover": ["compensate", "reconstruct"]}
    spec = load_study_spec(fake_study(tmp_path, pruning=pruning, finetune={"distill": 2.0}))
    assert spec.pruning.recover == ("compensate", "reconstruct") and spec.pruning.calib_images == 32
    assert spec.finetune.distill == 2.0 and load_study_spec(fake_study(tmp_path)).finetune.distill == 0.0
    bad = {
        "pruning": {"method": "unstructured", "importance": "output_error", "recover": ["compensate", "reheat"]},
        "finetune": {"distill": -1},
        "sampler": {"warm_start": "sensitivity"},
    }
    with pytest.raises(ConfigError) as e:
        load_study_spec(fake_study(tmp_path, **bad))
    assert [f"{k}: {m}" for k, m in e.value.problems] == [
        "pruning.importance: output_error ranks whole channels: use it with method structured, or l1/l2",
        "pruning.recover[1]: must be one of compensate, reconstruct, recalibrate, got 'reheat'",
        "pruning.recover: recovers a channel cut: it needs pruning.method structured",
        "finetune.distill: must be >= 0, got -1",
        "sampler.warm_start: sensitivity allocates channel cuts: it needs pruning.method structured",
    ]


def test_cache_section(tmp_path):
    spec, _ = _load(tmp_path, GOOD)
    assert (spec.cache.mode, spec.cache.budget_gb) == ("auto", 2.0)
    spec, _ = _load(tmp_path, GOOD + "cache: {mode: disk, budget_gb: 0.5}\n")
    assert (spec.cache.mode, spec.cache.budget_gb) == ("disk", 0.5)
    problems = _problems(tmp_path, GOOD + "cache: {mode: ssd, budget_gb: -1, budget: 3}\n")
    assert problems == [
        "cache.mode: must be one of auto, ram, disk, none, got 'ssd'",
        "cache.budget_gb: must be >= 0, got -1",
        "cache.budget: unknown key (did you mean 'budget_gb'?)",
    ]


def test_cache_modes_are_the_yolo_ones():
    from orchestrator.vocabulary import CACHE_MODES
    from orchestrator.yolo.image_cache import CACHE_MODES as YOLO_MODES

    assert CACHE_MODES == YOLO_MODES


@pytest.mark.parametrize(
    ("text", "floor"),
    [("", None), ("screen: false\n", None), ("screen: true\n", 0.3), ("screen: {min_map: 0.25}\n", 0.25)],
)
def test_screen_is_off_unless_asked(tmp_path, text, floor):
    spec, _ = _load(tmp_path, GOOD + text)
    assert spec.screen.min_map == floor and spec.screen.on is (floor is not None)


def test_screen_and_space_problems_name_their_key(tmp_path):
    assert _problems(tmp_path, GOOD + "screen: 3\n") == ["screen: must be true, false or {min_map: 0.3}, got 3"]
    assert _problems(tmp_path, GOOD + "screen: {min_map: 1.5}\n") == ["screen.min_map: must be > 0 and < 1, got 1.5"]
    assert _problems(tmp_path, GOOD + "screen: {floor: 0.3}\n")[0].startswith("screen.floor: unknown key")
    assert _problems(tmp_path, GOOD + "sampler: {space: relative}\n") == [
        "sampler.space: relative searches around the warm-start allocation: give sampler.warm_start"
    ]


def test_a_study_naming_no_method_gets_what_the_benches_rank_best_for_its_objectives(tmp_path):
    def pruning(name: str, **overrides):
        return load_study_spec(fake_study(tmp_path, name=name, **overrides)).pruning

    zeros = [{"metric": "map50_95"}, {"metric": "nonzero_params"}, {"metric": "size_zip_mb"}]
    p = pruning("zeros", objectives=zeros)  # every cost is one that masks lower: L1 masks
    assert (p.method, p.importance, p.recover) == ("unstructured", "l1", ())
    for name, costs in {"flops": ["gflops"], "mixed": ["nonzero_params", "ort_speedup"]}.items():
        p = pruning(name, objectives=[{"metric": "map50_95"}, *({"metric": c} for c in costs)])
        assert (p.method, p.importance, p.recover) == ("structured", "output_error", ("compensate", "reconstruct"))
    p = pruning("named", pruning={"importance": "l1", "recover": []})  # what a file names is kept
    assert (p.method, p.importance, p.recover) == ("structured", "l1", ())
    p = pruning("channel", pruning={"importance": "bn_scale"}, objectives=zeros)  # a channel importance: channels
    assert (p.method, p.importance) == ("structured", "bn_scale")
