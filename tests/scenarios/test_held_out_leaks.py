"""The held-out split never leaks silently: ``check`` and ``run`` refuse one that is the study's train or val split
(by path, or a copy of it), and warn in one line, naming the shared files, when it merely overlaps them.

Each dataset is built here from coco128 images: ``train`` (3 images), ``val`` (1), ``test`` (2 others).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main


@pytest.fixture
def folder(tmp_path: Path, tmp_path_factory, monkeypatch, assets: Path, coco128_yaml: Path) -> Path:
    """A working folder: the dataset ``tiny/``, the study's ``data.yaml`` and ``study.yaml`` (no held-out split)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path_factory.mktemp("cache")))
    src = assets / "coco128"
    images = sorted((src / "images" / "train2017").glob("*.jpg"))[:6]
    for split, chosen in (("train", images[:3]), ("val", images[3:4]), ("test", images[4:6])):
        for image in chosen:
            _copy(image, tmp_path / "tiny", split)
    _data(tmp_path / "data.yaml", val="images/val")
    study = {
        "name": "leaks",
        "model": str(coco128_yaml.parent / "yolov5n.pt"),
        "data": "data.yaml",
        "imgsz": 64,
        "device": "cpu",
        "pruning": {"granularity": "stage"},
        "budget": {"n_trials": 2},
        "resources": {"num_cpus": 1, "gpus_per_trial": 0},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    return tmp_path


def _copy(image: Path, root: Path, split: str) -> None:
    label = image.parents[2] / "labels" / image.parent.name / f"{image.stem}.txt"
    for f, kind in ((image, "images"), (label, "labels")):
        if f.is_file():
            (root / kind / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / kind / split / f.name)


def _data(path: Path, root: str = "tiny", **splits: str) -> Path:
    """A data yaml over ``root`` with coco128's classes; ``splits`` adds or replaces train/val/test."""
    doc = {"path": root, "train": "images/train", **splits, "names": _names()}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _names() -> list[str]:
    import os

    # the assets folder as tests/conftest.py finds it (a test module cannot import a conftest by name: there are two)
    assets = Path(
        os.environ.get("ORCHESTRATOR_ASSETS", Path(__file__).resolve().parents[2].parent / "shared" / "assets")
    )
    return yaml.safe_load((assets / "coco128.yaml").read_text())["names"]


def _with(folder: Path, **keys: str) -> Path:
    doc = yaml.safe_load((folder / "study.yaml").read_text())
    doc.update(keys)
    (folder / "bad.yaml").write_text(yaml.safe_dump(doc))
    return folder / "bad.yaml"


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _refused(folder: Path, study: Path, key: str, source: str, what: str, capsys) -> None:
    """``check`` and ``run`` exit 2 with one line naming the key, the split and the shared files; nothing created."""
    before = _tree(folder)
    want = f"error: {study}: {key}: the held-out split ({source}) is not held out: {what}. Give test: images "
    for command in (["check", str(study)], ["run", str(study), "--no-live"]):
        assert main(command) == 2, command[0]
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(want), (command[0], err)
    assert _tree(folder) == before
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def _val_name(folder: Path) -> str:
    return next((folder / "tiny" / "images" / "val").iterdir()).name


def _train_names(folder: Path) -> str:
    return ", ".join(sorted(p.name for p in (folder / "tiny" / "images" / "train").iterdir()))


def test_test_data_whose_test_is_the_training_folder(folder: Path, capsys):
    held = _data(folder / "held.yaml", val="images/val", test="images/train")
    what = f"3 of its 3 images are in the study's train split ({_train_names(folder)})"
    _refused(folder, _with(folder, test_data="held.yaml"), "test_data", f"{held} test:", what, capsys)


def test_test_data_without_test_whose_val_is_the_studys_val(folder: Path, capsys):
    held = _data(folder / "held.yaml", val="images/val")
    what = f"1 of its 1 images are in the study's val split ({_val_name(folder)})"
    source = f"{held} val: (it has no test:)"
    _refused(folder, _with(folder, test_data="held.yaml"), "test_data", source, what, capsys)


def test_the_data_yamls_own_test_equal_to_train(folder: Path, capsys):
    data = _data(folder / "data.yaml", val="images/val", test="images/train")
    what = f"3 of its 3 images are in the study's train split ({_train_names(folder)})"
    _refused(folder, folder / "study.yaml", "data", f"{data} test:", what, capsys)


def test_a_copy_of_the_val_folder_is_found_by_its_content(folder: Path, capsys):
    shutil.copytree(folder / "tiny", folder / "copy")
    held = _data(folder / "held.yaml", root="copy", val="images/train", test="images/val")
    what = f"1 of its 1 images are in the study's val split ({_val_name(folder)})"
    _refused(folder, _with(folder, test_data="held.yaml"), "test_data", f"{held} test:", what, capsys)


def test_a_test_split_that_overlaps_is_one_warning_naming_the_files(folder: Path, capsys):
    leaked = sorted((folder / "tiny" / "images" / "train").iterdir())[0]
    shutil.copy(leaked, folder / "tiny" / "images" / "test" / leaked.name)  # its label: the same name, none needed
    data = _data(folder / "data.yaml", val="images/val", test="images/test")
    assert main(["check", str(folder / "study.yaml"), "--json"]) == 0
    err = capsys.readouterr().err
    assert err == (
        f"warning: the held-out split ({data} test:) overlaps the study's data: 1 of its 3 images are in the study's "
        f"train split ({leaked.name}); their figures are not held out\n"
    )


def test_a_clean_test_split_says_nothing(folder: Path, capsys):
    _data(folder / "data.yaml", val="images/val", test="images/test")
    _data(folder / "held.yaml", val="images/test")
    for study in (folder / "study.yaml", _with(folder, test_data="held.yaml")):
        assert main(["check", str(study), "--json"]) == 0
        assert capsys.readouterr().err == ""
