"""Bad input: malformed study files and data files are refused by ``check`` and ``run`` with exit code 2.

Every case runs the real CLI in a fresh working folder whose study uses the default stores
(``mlruns/`` under that folder) and asserts the exact message (file, key path, what was expected),
the exit code, and that the folder holds nothing new afterwards: no Optuna study, no MLflow run,
no ``mlruns/``. ``run`` must refuse before it starts Ray, opens a storage or creates a run.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from hostile import png_bomb

from orchestrator.cli import main
from orchestrator.study.metrics import OBJECTIVES as METRICS

OBJECTIVES = ", ".join(METRICS)
NAN, INF = float("nan"), float("inf")
CONTROL = "(a newline, a tab, ...)"
NAME = (
    "must be letters, digits, '_', '-', '.', at most 214 characters (MLflow's tag keys hold 250, with the prefix "
    "'mlflow.sharedViewState.orchestrator-')"
)
EXPERIMENT = (
    "must be letters, digits, '_', '-', '.' (as name:), at most 255 characters (its artifact folder's name under "
    "artifact_location), not a path"
)


def _long(char: str, n: int) -> str:
    """How a message quotes a string of ``n`` times ``char`` (keys.show)."""
    return repr(char * n) if n <= 80 else repr(char * 60) + f"... ({n} characters)"


@pytest.fixture(scope="module")
def dataset(assets: Path, tmp_path_factory) -> Path:
    """A 4-image copy of coco128 (3 train, 1 val) with its labels: small enough to scan in milliseconds."""
    root = tmp_path_factory.mktemp("tiny") / "tiny"
    src = assets / "coco128"
    images = sorted((src / "images" / "train2017").glob("*.jpg"))[:4]
    for i, image in enumerate(images):
        split = "val" if i == 0 else "train"
        for kind, name in (("images", image.name), ("labels", image.with_suffix(".txt").name)):
            s = src / kind / "train2017" / name
            if s.is_file():
                (root / kind / split).mkdir(parents=True, exist_ok=True)
                shutil.copy(s, root / kind / split / name)
    return root


@pytest.fixture
def folder(tmp_path: Path, tmp_path_factory, monkeypatch, dataset: Path, coco128_yaml: Path) -> Path:
    """A working folder with a good study (``good.yaml``), its data yaml and dataset; the label cache elsewhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path_factory.mktemp("cache")))
    shutil.copytree(dataset, tmp_path / "tiny")
    names = yaml.safe_load(coco128_yaml.read_text())["names"]
    write_yaml(tmp_path / "data.yaml", {"path": "tiny", "train": "images/train", "val": "images/val", "names": names})
    write_yaml(tmp_path / "good.yaml", good_study(coco128_yaml.parent / "yolov5n.pt"))
    return tmp_path


def good_study(weights: Path) -> dict:
    return {
        "name": "bad-input",
        "model": str(weights),
        "data": "data.yaml",
        "imgsz": 64,
        "batch": 2,
        "device": "cpu",
        "pruning": {"method": "structured", "granularity": "stage", "ratio": {"min": 0.0, "max": 0.5}},
        "finetune": {"epochs": {"min": 0, "max": 1}, "lr0": 0.002},
        "objectives": [{"metric": "map50_95"}, {"metric": "gflops"}],
        "baselines": {"ratios": [0.2]},
        "budget": {"n_trials": 2},
        "resources": {"num_cpus": 1, "gpus_per_trial": 0},
    }


def write_yaml(path: Path, doc) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def study_with(folder: Path, edit: Callable[[dict], object]) -> Path:
    doc = yaml.safe_load((folder / "good.yaml").read_text())
    edit(doc)
    return write_yaml(folder / "bad.yaml", doc)


# ------------------------------------------------------------------ study files: (edit of the good study, problems)
def _set(path: str, value) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        d = doc
        for k in parents:
            d = d.setdefault(k, {})
        d[last] = value

    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda doc: doc.pop(key)


def _all(*edits) -> Callable[[dict], None]:
    return lambda doc: [e(doc) for e in edits]


STUDY_CASES = {
    "wrong type": (_set("imgsz", "big"), ["imgsz: must be an integer, got 'big'"]),
    "imgsz not a multiple of 32": (_set("imgsz", 100), ["imgsz: must be a multiple of 32 from 32 to 8192, got 100"]),
    "section of the wrong type": (_set("pruning", 0.5), ["pruning: must be a mapping of keys, got 0.5"]),
    "missing required key": (_drop("model"), ["model: missing (a string expected)"]),
    "unknown top-level key": (
        _set("sampeler", {"name": "tpe"}),
        ["sampeler: unknown key (did you mean 'sampler'?)"],
    ),
    "unknown nested key": (
        _set("pruning.methd", "structured"),
        ["pruning.methd: unknown key (did you mean 'method'?)"],
    ),
    "ratio bounds reversed": (
        _set("pruning.ratio", {"min": 0.5, "max": 0.2}),
        ["pruning.ratio: min <= max must hold, got min=0.5 max=0.2"],
    ),
    "ratio max = 1": (_set("pruning.ratio", {"max": 1.0}), ["pruning.ratio.max: must be < 1, got 1"]),
    "ratio negative": (_set("pruning.ratio", {"min": -0.1, "max": 0.5}), ["pruning.ratio.min: must be >= 0, got -0.1"]),
    "group ratio >= 1": (_set("pruning.groups", {"model.2": 1.5}), ["pruning.groups.model.2: must be < 1, got 1.5"]),
    "unknown objective": (
        _set("objectives", [{"metric": "accuracy"}]),
        [f"objectives[0].metric: must be one of {OBJECTIVES}, got 'accuracy'"],
    ),
    "objective in the wrong direction": (
        _set("objectives", [{"metric": "gflops", "direction": "maximize"}]),
        ["objectives[0].direction: gflops is better when lower: must be minimize, got maximize"],
    ),
    "no objective": (
        _set("objectives", []),
        ["objectives: must be a non-empty list of {metric, direction}, got a list []"],
    ),
    "empty search space": (
        _all(_set("pruning.ratio", 0.3), _set("finetune.epochs", 1)),
        [
            "pruning.ratio: the search space is empty (pruning.ratio, finetune.epochs, finetune.lr0, "
            "quantize.choices, imgsz and pruning.depth are all fixed): give one of them {min, max}"
        ],
    ),
    "epochs range reversed": (
        _set("finetune.epochs", {"min": 3, "max": 1}),
        ["finetune.epochs: min <= max must hold, got min=3 max=1"],
    ),
    "lr0 not positive": (_set("finetune.lr0", 0), ["finetune.lr0: must be > 0, got 0"]),
    "unknown hyp override": (
        _set("finetune.overrides", {"momentun": 0.9}),
        ["finetune.overrides.momentun: unknown hyp key (did you mean 'momentum'?)"],
    ),
    "bad sampler name": (
        _set("sampler", {"name": "cmaes"}),
        ["sampler.name: must be one of gp, tpe, nsga2, random, got 'cmaes'"],
    ),
    "negative n_trials": (_set("budget.n_trials", -5), ["budget.n_trials: must be >= 1, got -5"]),
    "constraint on an unknown metric": (
        _set("constraints", ["accuracy >= 0.5"]),
        [f"constraints[0]: unknown metric 'accuracy', expected one of: {OBJECTIVES}"],
    ),
    "constraint that does not parse": (
        _set("constraints", ["map50_95 > 0.3"]),
        ["constraints[0]: must read '<metric> >= <number>[ * baseline]' (or <=), got 'map50_95 > 0.3'"],
    ),
    "bad storage URL scheme": (
        _set("storage", "redis://localhost/0"),
        ["storage: must be an Optuna storage URL (sqlite, postgresql, mysql, journal), got 'redis://localhost/0'"],
    ),
    "storage not a URL": (
        _set("storage", "optuna.db"),
        ["storage: must be an Optuna storage URL (sqlite, postgresql, mysql, journal), got 'optuna.db'"],
    ),
    "MLflow file store": (
        _set("tracking.uri", "file:///tmp/mlruns"),
        [
            "tracking.uri: must be an MLflow tracking URI (sqlite, postgresql, mysql, http, https), got 'file:///tmp/mlruns'"
        ],
    ),
    "bad ray address": (
        _set("resources.address", "cluster"),
        ["resources.address: must be auto, host:port or ray://host:port, got 'cluster'"],
    ),
    "several problems at once": (
        _all(_set("pruning.ratio", {"max": 1.2}), _set("budget.n_trials", 0), _set("sampler", {"name": "grid"})),
        [
            "pruning.ratio.max: must be < 1, got 1.2",
            "budget.n_trials: must be >= 1, got 0",
            "sampler.name: must be one of gp, tpe, nsga2, random, got 'grid'",
        ],
    ),
    # values `check` must refuse because `run` would choke on them (or silently use a default instead)
    **{
        f"{key} = {value}": (_set(key, value), [f"{where or key}: must be a finite number, got {shown}"])
        for key, value, shown, where in [
            ("pruning.ratio", {"max": NAN}, "nan", "pruning.ratio.max"),
            ("pruning.ratio", {"min": NAN, "max": 0.5}, "nan", "pruning.ratio.min"),
            ("pruning.ratio", {"min": 0.1, "max": INF}, "inf", "pruning.ratio.max"),
            ("pruning.ratio", {"min": -INF, "max": 0.5}, "-inf", "pruning.ratio.min"),
            ("pruning.ratio", NAN, "nan", None),
            ("pruning.ratio", INF, "inf", None),
            ("pruning.groups", {"model.2": NAN}, "nan", "pruning.groups.model.2"),
            ("pruning.groups", {"model.2": {"max": NAN}}, "nan", "pruning.groups.model.2.max"),
            ("pruning.groups", {"model.*": {"min": INF, "max": 0.5}}, "inf", "pruning.groups.model.*.min"),
            ("pruning.step", NAN, "nan", None),
            ("finetune.lr0", INF, "inf", None),
            ("finetune.lr0", NAN, "nan", None),
            ("finetune.lr0", {"min": 0.001, "max": INF}, "inf", "finetune.lr0.max"),
            ("finetune.lr0", {"min": NAN, "max": 0.01}, "nan", "finetune.lr0.min"),
            ("finetune.lr0", 10**400, "inf", None),
            ("finetune.overrides", {"momentum": NAN}, "nan", "finetune.overrides.momentum"),
            ("finetune.overrides", {"weight_decay": -INF}, "-inf", "finetune.overrides.weight_decay"),
            ("finetune.overrides", {"warmup_epochs": INF}, "inf", "finetune.overrides.warmup_epochs"),
            ("baselines.ratios", [0.2, NAN], "nan", "baselines.ratios[1]"),
            ("baselines.lr0", INF, "inf", None),
            ("budget.timeout_s", INF, "inf", None),
            ("budget.timeout_s", NAN, "nan", None),
            ("resources.gpus_per_trial", NAN, "nan", None),
            ("tracking.refresh_s", INF, "inf", None),
            ("fake.sleep_s", NAN, "nan", None),
        ]
    },
    "constraint 1e999 * baseline": (
        _set("constraints", ["map50_95 >= 1e999 * baseline"]),
        ["constraints[0]: the number must be finite, got 1e999 (reads as inf)"],
    ),
    "constraint 1e999": (
        _set("constraints", ["gflops <= 1e999"]),
        ["constraints[0]: the number must be finite, got 1e999 (reads as inf)"],
    ),
    **{
        f"{key} = {shown}": (_set(key, value), [f"{key}: must be an integer in [0, 2^32), got {shown}"])
        for key, value, shown in [
            ("seed", -1, "-1"),
            ("seed", 2**32, "4294967296"),
            ("seed", 2**80, "1208...e+24 (25 digits)"),
            ("sampler.seed", -1, "-1"),
            ("sampler.seed", 2**80, "1208...e+24 (25 digits)"),
            ("sampler.seed", -(2**70), "-1180...e+21 (22 digits)"),
        ]
    },
    "seed that is not an integer": (_set("seed", 1.5), ["seed: must be an integer, got 1.5"]),
    "pruning.step 1e-300": (
        _set("pruning.step", 1e-300),
        [
            "pruning.step: 1e-300 makes 5e+299 ratios per group: at most 1000 (use a step >= 0.0005, or no step for "
            "a continuous range)"
        ],
    ),
    "pruning.step 1e-4": (
        _set("pruning.step", 1e-4),
        [
            "pruning.step: 0.0001 makes 5e+03 ratios per group: at most 1000 (use a step >= 0.0005, or no step for "
            "a continuous range)"
        ],
    ),
    "pruning.step fine for a wide group": (
        _all(_set("pruning.step", 0.0008), _set("pruning.groups", {"model.2*": {"min": 0.0, "max": 0.9}})),
        [
            "pruning.step: 0.0008 makes 1.13e+03 ratios per group: at most 1000 (use a step >= 0.0009, or no step "
            "for a continuous range)"
        ],
    ),
    "pruning.step 0": (_set("pruning.step", 0), ["pruning.step: must be between 0 and 1, got 0"]),
    "imgsz beyond the limit": (
        _set("imgsz", 99968),
        ["imgsz: must be a multiple of 32 from 32 to 8192, got 99968"],
    ),
    **{
        f"{key} = {value!r}": (
            _set(key, value),
            [f"{key}: must not contain control characters {CONTROL}, got {value!r}"],
        )
        for key, value in [
            ("name", "bad\nname"),
            ("name", "bad-input\n"),
            ("name", "tab\tname"),
            ("name", "esc\x1b[31mred"),
            ("name", "nul\x00"),
            ("model", "yolov5n.pt\n"),
            ("data", "data.yaml\r"),
            ("storage", "sqlite:///mlruns/optuna.db\n"),
            ("tracking.uri", "sqlite:///mlruns/mlflow.db\x07"),
            ("tracking.experiment", "exp\nsecond line"),
            ("tracking.artifact_location", "mlruns/art\x1b"),
            ("device", "cpu\n"),
        ]
    },
    "exclude entry with a newline": (
        _set("pruning.exclude", ["model.24", "model.2\n"]),
        [f"pruning.exclude[1]: must not contain control characters {CONTROL}, got 'model.2\\n'"],
    ),
    "group pattern with a newline": (
        _set("pruning.groups", {"model.2\n": 0.3}),
        [f"pruning.groups.model.2\\n: a group pattern must not contain control characters {CONTROL}, got 'model.2\\n'"],
    ),
    "unknown key with a newline": (
        _set("bo\ngus", 1),
        ["bo\\ngus: unknown key"],
    ),
    **{
        f"experiment {value!r}": (
            _set("tracking.experiment", value),
            [f"tracking.experiment: {EXPERIMENT}, got {value!r}"],
        )
        for value in ["../../../x", "/tmp/elsewhere", "..", ".", "a/b", "a\\b", "C:evil", "  "]
    },
    # names the stores cannot hold (measured: tests/study/test_name_limits.py): refused before run starts Ray
    **{
        f"name of {n} characters": (_set("name", "n" * n), [f"name: {NAME}, got {_long('n', n)}"])
        for n in (215, 300, 10_000)
    },
    **{
        f"experiment of {n} characters": (
            _set("tracking.experiment", "e" * n),
            [f"tracking.experiment: {EXPERIMENT}, got {_long('e', n)}"],
        )
        for n in (256, 300, 10_000)
    },
    **{  # the characters name: refuses, tracking.experiment refuses too
        f"experiment {value!r}": (
            _set("tracking.experiment", value),
            [f"tracking.experiment: {EXPERIMENT}, got {value!r}"],
        )
        for value in ["exp\u202egnp.exe", "exp-\U0001f680", "an experiment"]
    },
}


def assert_refused(folder: Path, study: Path, expected: list[str], capsys) -> None:
    """``check`` and ``run`` both exit 2 with exactly ``expected`` and leave the folder as it was."""
    before = tree(folder)
    want = "error: " + "\n".join(f"{study}: {line}" for line in expected) + "\n"
    for command in (["check", str(study)], ["run", str(study), "--no-live"]):
        code, err = cli(command, capsys)
        assert (code, err) == (2, want), command[0]
    assert tree(folder) == before  # no mlruns/, no Optuna study, no MLflow run, no staging files
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_the_good_study_passes_check_and_writes_nothing(folder: Path, capsys):
    before = tree(folder)
    code, err = cli(["check", str(folder / "good.yaml"), "--json"], capsys)
    assert (code, err) == (0, "")
    assert tree(folder) == before


@pytest.mark.parametrize("case", STUDY_CASES, ids=list(STUDY_CASES))
def test_bad_study_file(folder: Path, case: str, capsys):
    edit, expected = STUDY_CASES[case]
    assert_refused(folder, study_with(folder, edit), expected, capsys)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: [unclosed\n", "line 2: not valid YAML (did not find expected ',' or ']')"),
        ("- name: a\n- name: b\n", "must be a mapping of keys, got list"),
        ("", "must be a mapping of keys, got NoneType"),
    ],
    ids=["invalid YAML", "a list, not a mapping", "empty file"],
)
def test_study_file_that_is_not_a_study(folder: Path, text: str, expected: str, capsys):
    (folder / "bad.yaml").write_text(text)
    assert_refused(folder, folder / "bad.yaml", [expected], capsys)


def _bomb(levels: int = 9, fan: int = 10) -> str:
    """A YAML alias bomb of a few hundred bytes that expands to fan**levels values for whoever walks it."""
    lines = [f"l0: &l0 [{', '.join(['x'] * fan)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# (text appended to or replacing the good study, the one line expected); each refused in < 1 s
TEXT_CASES: dict[str, tuple[Callable[[str], str], str]] = {
    "duplicate top-level key": (
        lambda good: good + "name: other\n",
        "line {n1}: duplicate key 'name' (first on line 1)",
    ),
    "duplicate nested key": (
        lambda good: good.replace("  method: structured\n", "  method: structured\n  method: unstructured\n"),
        "line 9: duplicate key 'method' (first on line 8)",
    ),
    "duplicate key in a flow mapping": (
        lambda good: good + "fake: {checkpoint_kb: 1, checkpoint_kb: 2}\n",
        "line {n1}: duplicate key 'checkpoint_kb' (first on line {n1})",
    ),
    "alias bomb under a known key": (
        lambda good: good + "fake:\n" + "".join("  " + line + "\n" for line in _bomb().splitlines()),
        "line {n6}: more than 100,000 values once its aliases are expanded (an alias bomb?)",
    ),
    "alias bomb as the whole file": (
        lambda good: _bomb(),
        "line 5: more than 100,000 values once its aliases are expanded (an alias bomb?)",
    ),
    "10,000 nested [": (lambda good: "[" * 10_000, "line 1: not valid YAML (exceeded maximum nesting depth)"),
    "100 nested lists, closed": (
        lambda good: good + "fake: {fail_on: " + "[" * 100 + "]" * 100 + "}\n",
        "line {n1}: nested more than 64 levels deep",
    ),
    "200,000 values under 1 MiB": (
        lambda good: good + "fake: {fail_on: [" + ",".join(["1"] * 200_000) + "]}\n",
        "line {n1}: more than 100,000 values",
    ),
    "larger than 1 MiB": (
        lambda good: good + "#" * (1 << 20) + "\n",
        "{size} bytes, more than the 1,048,576 a YAML file may have here",
    ),
    "undefined alias": (lambda good: good + "seed: *nowhere\n", "line {n1}: not valid YAML (found undefined alias)"),
    "two documents": (
        lambda good: good + "---\nname: second\n",
        "line {n1}: not valid YAML (but found another document)",
    ),
    "a python object tag": (
        lambda good: good + "seed: !!python/object/apply:os.system [touch pwned]\n",
        "line {n1}: not valid YAML (could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system')",
    ),
    "an integer of 5,000 digits": (
        lambda good: good + "seed: " + "9" * 5000 + "\n",
        "not valid YAML (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
        "use sys.set_in)",
    ),
}


@pytest.mark.parametrize("case", TEXT_CASES, ids=list(TEXT_CASES))
def test_hostile_study_text_is_refused_fast(folder: Path, case: str, capsys):
    make, expected = TEXT_CASES[case]
    good = (folder / "good.yaml").read_text()
    text = make(good)
    n = len(good.splitlines())
    (folder / "bad.yaml").write_text(text)
    expected = expected.format(n1=n + 1, n6=n + 6, size=f"{len(text.encode()):,}")
    t0 = time.perf_counter()
    code, err = cli(["check", str(folder / "bad.yaml")], capsys)
    took = time.perf_counter() - t0
    assert (code, err) == (2, f"error: {folder / 'bad.yaml'}: {expected}\n")
    assert took < 1.0, f"refused in {took:.2f} s"
    assert_refused(folder, folder / "bad.yaml", [expected], capsys)
    assert not (folder / "pwned").exists()


def test_a_file_that_is_not_utf8(folder: Path, capsys):
    (folder / "bad.yaml").write_bytes(b"name: \xff\xfe\n")
    assert_refused(folder, folder / "bad.yaml", ["not UTF-8 text (byte 6)"], capsys)


def _junk(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a database " * 512)


def _database(path: Path, zero_page: int | None = None) -> None:
    """A real SQLite file of a few dozen pages; with ``zero_page``, 4 KiB of it zeroed (a damaged disk block)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x TEXT)")
    con.executemany("INSERT INTO t VALUES (?)", [("x" * 100,) for _ in range(2000)])
    con.commit()
    con.close()
    if zero_page is not None:
        data = bytearray(path.read_bytes())
        page = 4096 * zero_page
        data[page : page + 4096] = bytes(4096)
        path.write_bytes(bytes(data))


OPTUNA_DB, MLFLOW_DB = Path("mlruns/optuna.db"), Path("mlruns/mlflow.db")
NOT_A_DB = "is not a usable SQLite database (file is not a database): restore it from a backup or move it away"
IN_MEMORY = "is an in-memory database: the study's record would vanish at exit; give a file"
SHARED = (
    "is also the Optuna storage: Optuna and MLflow each need a database file of their own (the defaults are "
    "mlruns/optuna.db and mlruns/mlflow.db)"
)
# (set-up in the working folder, study edit, the lines expected: a trailing '*' means "starts with")
STORE_CASES: dict[str, tuple[Callable[[], None], Callable[[dict], None] | None, list[str]]] = {
    "optuna.db is not a database": (lambda: _junk(OPTUNA_DB), None, [f"storage: {OPTUNA_DB} {NOT_A_DB}"]),
    "mlflow.db is not a database": (lambda: _junk(MLFLOW_DB), None, [f"tracking.uri: {MLFLOW_DB} {NOT_A_DB}"]),
    "both stores are not databases": (
        lambda: (_junk(OPTUNA_DB), _junk(MLFLOW_DB)),
        None,
        [f"storage: {OPTUNA_DB} {NOT_A_DB}", f"tracking.uri: {MLFLOW_DB} {NOT_A_DB}"],
    ),
    "optuna.db with 4 KiB zeroed": (
        lambda: _database(OPTUNA_DB, zero_page=1),
        None,
        [f"storage: {OPTUNA_DB} is damaged (SQLite: *"],
    ),
    "mlflow.db with 4 KiB zeroed": (
        lambda: _database(MLFLOW_DB, zero_page=2),
        None,
        [f"tracking.uri: {MLFLOW_DB} is damaged (SQLite: *"],
    ),
    "storage opened read-only": (
        lambda: _database(OPTUNA_DB),
        _set("storage", f"sqlite:///file:{OPTUNA_DB}?mode=ro&uri=true"),
        [f"storage: {OPTUNA_DB} is opened read-only (mode=ro&uri=true): `orchestrator run` writes to it"],
    ),
    "tracking store opened read-only": (
        lambda: _database(MLFLOW_DB),
        _set("tracking.uri", f"sqlite:///file:{MLFLOW_DB}?immutable=1&uri=true"),
        [f"tracking.uri: {MLFLOW_DB} is opened read-only (immutable=1&uri=true): `orchestrator run` writes to it"],
    ),
    **{  # the study's record would vanish at exit (the next run refused: "no such study")
        f"{key} {url}": (lambda: None, _set(key, url), [f"{key}: {url} {IN_MEMORY}"])
        for key, url in [
            ("storage", "sqlite://"),
            ("storage", "sqlite:///:memory:"),
            ("storage", "sqlite:///file::memory:?cache=shared&uri=true"),
            ("tracking.uri", "sqlite://"),
            ("tracking.uri", "sqlite:///:memory:"),
        ]
    },
    # one SQLite file for both stores: Optuna's tables in MLflow's database, or the reverse
    "tracking.uri is the Optuna storage": (
        lambda: None,
        _set("tracking.uri", f"sqlite:///{OPTUNA_DB}"),
        [f"tracking.uri: {OPTUNA_DB} {SHARED}"],
    ),
    "storage is the (existing) MLflow store": (
        lambda: _database(MLFLOW_DB),
        _set("storage", f"sqlite:///{MLFLOW_DB}"),
        [f"tracking.uri: {MLFLOW_DB} {SHARED}"],
    ),
    "the same file spelled two ways": (
        lambda: None,
        _set("storage", "sqlite:///mlruns/../mlruns/./mlflow.db"),
        [f"tracking.uri: mlruns/../mlruns/mlflow.db {SHARED}"],
    ),
}


@pytest.mark.parametrize("case", STORE_CASES, ids=list(STORE_CASES))
def test_damaged_or_read_only_store_is_refused_before_anything_starts(folder: Path, case: str, capsys):
    setup, edit, expected = STORE_CASES[case]
    setup()
    study = study_with(folder, edit) if edit else folder / "good.yaml"
    before = {p: p.read_bytes() for p in (OPTUNA_DB, MLFLOW_DB) if p.exists()}
    listing = tree(folder)
    for command in (["check", str(study)], ["run", str(study), "--no-live"]):
        code, err = cli(command, capsys)
        lines = err.removeprefix("error: ").splitlines()
        assert code == 2 and err.startswith("error: ") and len(lines) == len(expected), (command[0], err)
        for line, want in zip(lines, expected):
            prefix = f"{study}: {want.removesuffix('*')}"
            assert line.startswith(prefix) if want.endswith("*") else line == prefix, (command[0], line)
    assert tree(folder) == listing and {p: p.read_bytes() for p in before} == before  # nothing written
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_status_on_an_empty_storage_file_creates_no_tables(folder: Path, capsys):
    OPTUNA_DB.parent.mkdir()
    OPTUNA_DB.touch()
    before = tree(folder)
    assert cli(["status", str(folder / "good.yaml")], capsys) == (
        2,
        f"error: no study storage at {OPTUNA_DB} (the file holds no Optuna tables): run first\n",
    )
    assert OPTUNA_DB.stat().st_size == 0 and tree(folder) == before


def test_check_reports_a_checkpoint_whose_tensors_do_not_read_back(folder: Path, yolov5n_pt: Path, capsys):
    data = bytearray(yolov5n_pt.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    (folder / "zeroed.pt").write_bytes(bytes(data))
    study = study_with(folder, _set("model", "zeroed.pt"))
    before = tree(folder)
    for command in (["check", str(study)], ["run", str(study), "--no-live"]):
        code, err = cli(command, capsys)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: {study}: model: zeroed.pt: damaged checkpoint: record archive/data/")
        assert err.endswith(" fails its CRC check (truncated or corrupt?)\n")
    assert tree(folder) == before


# (arguments after the command's weights, the one line expected; '*' at the end means "starts with")
ARG_CASES: dict[str, tuple[list[str], str]] = {
    "val --imgsz 99968": (
        ["val", "--weights", "{weights}", "--data", "data.yaml", "--imgsz", "99968"],
        "--imgsz: at most 8192 pixels, got 99968 (one 99968x99968 image alone is 30 GB)",
    ),
    "val --imgsz 8224": (
        ["val", "--weights", "{weights}", "--data", "data.yaml", "--imgsz", "8224"],
        "--imgsz: at most 8192 pixels, got 8224 (one 8224x8224 image alone is 0 GB)",
    ),
    "finetune --imgsz 99968": (
        [
            "finetune",
            "--weights",
            "{weights}",
            "--data",
            "data.yaml",
            "--imgsz",
            "99968",
            "--epochs",
            "1",
            "--out",
            "ft.pt",
        ],
        "--imgsz: at most 8192 pixels, got 99968 (one 99968x99968 image alone is 30 GB)",
    ),
    "measure --imgsz 16384": (
        ["measure", "--weights", "{weights}", "--imgsz", "16384"],
        "--imgsz: at most 8192 pixels, got 16384 (one 16384x16384 image alone is 1 GB)",
    ),
    "prune --out /proc/x.pt": (
        ["prune", "--weights", "{weights}", "--ratio", "0.3", "--out", "/proc/x.pt"],
        "--out: cannot write to /proc (*",
    ),
    "finetune --out /proc/x.pt": (
        ["finetune", "--weights", "{weights}", "--data", "data.yaml", "--epochs", "1", "--out", "/proc/x.pt"],
        "--out: cannot write to /proc (*",
    ),
    "prune --out a folder": (
        ["prune", "--weights", "{weights}", "--ratio", "0.3", "--out", "tiny"],
        "--out: tiny is a folder: give a file name",
    ),
    "prune --out under a file": (
        ["prune", "--weights", "{weights}", "--ratio", "0.3", "--out", "good.yaml/pruned.pt"],
        "--out: cannot write to good.yaml (Not a directory): choose another path",
    ),
    "run --trials -1": (["run", "good.yaml", "--trials", "-1"], "--trials: expected >= 1, got -1"),
}


@pytest.mark.parametrize("case", ARG_CASES, ids=list(ARG_CASES))
def test_impossible_argument_is_refused_before_the_work(folder: Path, yolov5n_pt: Path, case: str, capsys):
    argv, expected = ARG_CASES[case]
    before = tree(folder)
    t0 = time.perf_counter()
    code, err = cli([a.format(weights=yolov5n_pt) for a in argv], capsys)
    took = time.perf_counter() - t0
    assert code == 2 and len(err.splitlines()) == 1, err
    line = err.removeprefix("error: ").rstrip("\n")
    assert line.startswith(expected[:-1]) if expected.endswith("*") else line == expected
    assert took < 5.0, f"refused after {took:.1f} s: the check must come before the work"
    assert tree(folder) == before


def test_the_highest_seed_check_accepts_survives_a_resume(tmp_path: Path):
    """``run`` offsets the seed by the trials already there: 2^32 - 1 plus 5 must still be a seed."""
    from orchestrator.search import make_sampler
    from orchestrator.study.file import parse_study

    for name in ("gp", "nsga2", "tpe", "random"):
        doc = {"name": "s", "model": "m.pt", "data": "d.yaml", "sampler": {"name": name, "seed": 2**32 - 1}}
        spec = parse_study(doc, tmp_path / "s.yaml")
        assert make_sampler(spec, 5) is not None


def test_missing_study_file(folder: Path, capsys):
    assert_refused(folder, folder / "nope.yaml", ["study file not found"], capsys)


# ------------------------------------------------------------------ referenced files: weights and data
class _RunsACommand:
    """Unpickling this runs ``touch <marker>``: what a crafted checkpoint would do with plain torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_that_are_not_a_checkpoint(folder: Path, capsys):
    (folder / "notes.pt").write_text("not a checkpoint\n")
    study = study_with(folder, _set("model", "notes.pt"))
    assert_refused(
        folder,
        study,
        ["model: notes.pt: not a PyTorch checkpoint (expected a zip archive written by torch.save)"],
        capsys,
    )


def test_missing_weights_file(folder: Path, capsys):
    study = study_with(folder, _set("model", "weights/missing.pt"))
    assert_refused(folder, study, ["model: weights/missing.pt: no such weights file"], capsys)


def test_weights_that_would_run_a_command_are_refused_and_run_nothing(folder: Path, capsys):
    marker = folder.parent / f"{folder.name}-pwned"
    torch.save({"model": _RunsACommand(marker)}, folder / "evil.pt")
    study = study_with(folder, _set("model", "evil.pt"))
    before = tree(folder)
    for command in (["check", str(study)], ["run", str(study), "--no-live"]):
        code, err = cli(command, capsys)
        assert code == 2
        assert err.startswith(f"error: {study}: model: evil.pt: refused to load: the pickle references posix.system")
    assert not marker.exists()
    assert tree(folder) == before


def test_data_yaml_missing(folder: Path, capsys):
    study = study_with(folder, _set("data", "nowhere/data.yaml"))
    assert_refused(folder, study, ["data: nowhere/data.yaml: no such data yaml"], capsys)


def test_data_yaml_pointing_nowhere(folder: Path, capsys):
    write_yaml(folder / "data.yaml", {"path": "gone", "train": "images/train", "val": "images/val", "names": ["a"]})
    assert_refused(
        folder,
        folder / "good.yaml",
        [f"data: {folder}/data.yaml: val: {folder}/gone/images/val does not exist"],
        capsys,
    )


def test_data_yaml_that_is_not_yaml(folder: Path, capsys):
    (folder / "data.yaml").write_text("path: tiny\nnames: [a, b\n")
    assert_refused(
        folder,
        folder / "good.yaml",
        [f"data: {folder}/data.yaml: line 3: not valid YAML (did not find expected ',' or ']')"],
        capsys,
    )


def test_data_yaml_without_names(folder: Path, capsys):
    write_yaml(folder / "data.yaml", {"path": "tiny", "train": "images/train", "val": "images/val"})
    assert_refused(
        folder,
        folder / "good.yaml",
        [f"data: {folder}/data.yaml: names: expected a list or a {{index: name}} mapping"],
        capsys,
    )


def test_data_yaml_with_other_classes_than_the_model(folder: Path, capsys):
    write_yaml(
        folder / "data.yaml", {"path": "tiny", "train": "images/train", "val": "images/val", "names": ["cat", "dog"]}
    )
    assert_refused(
        folder,
        folder / "good.yaml",
        [f"data: {folder}/data.yaml: nc: the model predicts 80 classes but the data yaml has 2"],
        capsys,
    )


HEAD = "path: tiny\ntrain: images/train\nval: images/val\n"
# (data yaml text, the message after "data: <file>: "); each refused by check and run in < 1 s, except the
# 20,000-name files, which are within the size limits and parsed in full before their class count is refused
DATA_CASES: dict[str, tuple[str, str]] = {
    "10^6 class names": (
        HEAD + "names: [" + ",".join(["a"] * 1_000_000) + "]\n",
        "{size} bytes, more than the 1,048,576 a YAML file may have here",
    ),
    "20,000 class names": (
        HEAD + "names: [" + ",".join(["a"] * 20_000) + "]\n",
        "names: 20,000 classes, more than the 10,000 allowed",
    ),
    "20,000 names by index": (
        HEAD + "names:\n" + "".join(f"  {i}: c{i}\n" for i in range(20_000)),
        "names: 20,000 classes, more than the 10,000 allowed",
    ),
    "nc 10^6 without names": (HEAD + "nc: 1000000\n", "nc: 1,000,000 classes, more than the 10,000 allowed"),
    "200,000 values under 1 MiB": (
        HEAD + "names: [" + ",".join(["a"] * 200_000) + "]\n",
        "line 4: more than 100,000 values",
    ),
    "alias bomb in names": (
        HEAD + "".join(f"{line}\n" for line in _bomb().splitlines()) + "names: *l8\n",
        "line 8: more than 100,000 values once its aliases are expanded (an alias bomb?)",
    ),
    "duplicate names key": (HEAD + "names: [a]\nnames: [b]\n", "line 5: duplicate key 'names' (first on line 4)"),
    "duplicate val key": (HEAD + "val: images/train\nnames: [a]\n", "line 4: duplicate key 'val' (first on line 3)"),
    "10,000 nested [": (
        HEAD + "names: " + "[" * 10_000 + "\n",
        "line 4: not valid YAML (exceeded maximum nesting depth)",
    ),
}


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_hostile_data_yaml_is_refused_fast(folder: Path, case: str, capsys):
    text, expected = DATA_CASES[case]
    (folder / "data.yaml").write_text(text)
    expected = f"data: {folder}/data.yaml: " + expected.format(size=f"{len(text.encode()):,}")
    import orchestrator.study.checks
    import orchestrator.yolo.data  # noqa: F401 (imported before the clock starts: cv2, numpy)

    t0 = time.perf_counter()
    code, err = cli(["check", str(folder / "good.yaml")], capsys)
    took = time.perf_counter() - t0
    assert (code, err) == (2, f"error: {folder / 'good.yaml'}: {expected}\n")
    assert took < (10.0 if case.startswith("20,000") else 1.0), f"refused in {took:.2f} s"
    assert_refused(folder, folder / "good.yaml", [expected], capsys)


def test_labels_with_class_ids_outside_nc_stop_the_study(folder: Path, capsys):
    """A class id >= nc means the yaml does not describe these labels: refused, never a silent skip."""
    label = sorted((folder / "tiny" / "labels" / "train").glob("*.txt"))[0]
    label.write_text(label.read_text() + "80 0.5 0.5 0.1 0.1\n")
    n = len(label.read_text().splitlines())
    assert_refused(
        folder,
        folder / "good.yaml",
        [
            f"data: {folder}/data.yaml: train: 1 label lines have a class id outside 0..79 (nc=80), first: "
            f"{label}:{n}: class 80 is not an integer in 0..79; image skipped; fix the labels or names/nc"
        ],
        capsys,
    )


def test_labels_with_class_ids_outside_nc_through_a_subprocess(folder: Path):
    label = sorted((folder / "tiny" / "labels" / "val").glob("*.txt"))[0]
    label.write_text("3 0.5 0.5 0.2 0.2\n-1 0.5 0.5 0.1 0.1\n")
    before = tree(folder)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "good.yaml", "--no-live"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert out.returncode == 2
    assert out.stderr == (
        f"error: good.yaml: data: {folder}/data.yaml: val: 1 label lines have a class id outside 0..79 (nc=80), "
        f"first: {label}:2: class -1 is not an integer in 0..79; image skipped; fix the labels or names/nc\n"
    )
    assert tree(folder) == before


def test_invalid_yaml_through_a_subprocess(folder: Path):
    (folder / "bad.yaml").write_text("name: x\npruning:\n  ratio: {max: 0.5\n")
    before = tree(folder)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "bad.yaml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr == "error: bad.yaml: line 4: not valid YAML (did not find expected ',' or '}')\n"
    assert tree(folder) == before


def test_other_label_problems_are_warned_not_silent(folder: Path, capsys):
    """A malformed line skips its image (as the official loader does); check and run say so up front."""
    label = sorted((folder / "tiny" / "labels" / "train").glob("*.txt"))[0]
    label.write_text("0 0.5 0.5\n")
    before = tree(folder)
    code, err = cli(["check", str(folder / "good.yaml"), "--json"], capsys)
    assert code == 0
    assert err == (
        f"warning: {folder}/data.yaml: train: 1 data problems, 1 of 3 images skipped; first: "
        f"{label}:1: expected 5 numbers (class cx cy w h), found 3; image skipped\n"
    )
    assert tree(folder) == before


def test_bad_trials_argument(folder: Path, capsys):
    before = tree(folder)
    assert cli(["run", str(folder / "good.yaml"), "--trials", "0"], capsys) == (
        2,
        "error: --trials: expected >= 1, got 0\n",
    )
    assert tree(folder) == before


def test_a_dataset_still_to_download_is_not_an_error(folder: Path, capsys):
    """A missing dataset with ``download:`` is fetched by the first trial; check neither fails nor downloads."""
    doc = {"path": "later", "train": "images/train", "val": "images/val", "names": ["a"] * 80}
    write_yaml(folder / "data.yaml", dict(doc, download="https://example.invalid/later.zip"))
    before = tree(folder)
    assert cli(["check", str(folder / "good.yaml"), "--json"], capsys) == (0, "")
    assert tree(folder) == before


def test_an_image_above_the_pixel_limit_is_skipped_by_its_header(folder: Path):
    """A 13400x13400 PNG of 0.3 MB (540 MB decoded, 8 decoded at once by the scan's threads) is not decoded.

    Refused from its header like official YOLOv5 (PIL's 179-megapixel limit): one counted warning naming it,
    the image skipped. A subprocess under an address-space limit; its own peak RSS from wait4.
    """
    bomb = png_bomb(folder / "tiny" / "images" / "train" / "bomb.png", side=13400)
    before = tree(folder)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    with open(folder.parent / f"{folder.name}.stderr", "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "check", "good.yaml"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=os.environ.copy(),
            preexec_fn=limit,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    assert proc.returncode == 0, text
    assert text == (
        f"warning: {folder}/data.yaml: train: 1 data problems, 1 of 4 images skipped; first: {bomb}: "
        "180-megapixel image, above the limit of 179 megapixels (a decompression bomb?); skipped\n"
    )
    assert usage.ru_maxrss / 1024 < 1536
    assert tree(folder) == before
