"""``val`` and ``finetune`` read data through ``check``'s own scan and reach its verdicts: a class id outside the
data yaml's classes is refused in one line (exit 2) by all three, whichever split it is in (``finetune`` used to
drop such an image silently, ``val`` to warn and exit 0). A damaged label cache costs a rescan, not a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from data_subsets import copied_splits

from orchestrator.cli import main
from orchestrator.yolo.labels import scan_labels


@pytest.fixture
def data(tmp_path: Path, monkeypatch, assets: Path) -> Path:
    """``ds/data.yaml``: 2 train and 2 val coco128 images (copies: their labels may be edited)."""
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    return copied_splits(assets, tmp_path / "ds", source="val2017", train=2, val=2)


def _bad_class(data: Path, split: str) -> str:
    """Append a class id 99 (nc is 80) to one label file of ``split``; the line check names first."""
    label = sorted((data.parent / "labels" / split).glob("*.txt"))[0]
    n = len(label.read_text().splitlines())
    label.write_text(label.read_text() + "99 0.5 0.5 0.1 0.1\n")
    return f"{label}:{n + 1}"


def _study(data: Path, weights: Path) -> Path:
    doc = {"name": "same", "model": str(weights), "data": str(data), "imgsz": 64, "budget": {"n_trials": 1}}
    path = data.parent / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _refusal(argv: list[str], capsys) -> str:
    assert main(argv) == 2, argv[0]
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1 and cap.err.startswith("error: "), cap.err
    return cap.err


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_class_id_outside_nc_is_refused_by_check_finetune_and_val_alike(
    data: Path, yolov5n_pt: Path, tmp_path: Path, split: str, capsys
):
    first = _bad_class(data, split)
    why = f"{data}: {split}: 1 label lines have a class id outside 0..79 (nc=80), first: {first}: "
    study = _study(data, yolov5n_pt)
    assert why in _refusal(["check", str(study)], capsys)
    out = tmp_path / "out.pt"
    finetune = ["finetune", "--weights", str(yolov5n_pt), "--data", str(data), "--epochs", "1", "--imgsz", "64"]
    assert _refusal([*finetune, "--out", str(out)], capsys).startswith(f"error: {why}")
    assert not out.exists()  # refused before the work
    val = ["val", "--weights", str(yolov5n_pt), "--data", str(data), "--imgsz", "64"]
    if split == "val":
        assert _refusal(val, capsys).startswith(f"error: {why}")
    else:  # val reads only the val split, which is sound
        assert main([*val, "--json"]) == 0 and capsys.readouterr().err == ""


def test_a_split_without_usable_images_is_refused_by_val_in_checks_words(data: Path, yolov5n_pt: Path, capsys):
    for image in (data.parent / "images" / "val").iterdir():
        image.write_bytes(b"\x00not an image")
    val = ["val", "--weights", str(yolov5n_pt), "--data", str(data), "--imgsz", "64"]
    assert _refusal(val, capsys).startswith(f"error: {data}: val: no usable images (2 problems, first: ")


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a zip at all", b"\x93NUMPY junk"], ids=repr)
def test_a_damaged_label_cache_is_rebuilt(data: Path, tmp_path: Path, damage: bytes):
    images = sorted((data.parent / "images" / "train").glob("*.jpg"))
    first = scan_labels(images, nc=80)
    (cache,) = (tmp_path / "cache" / "labels").glob("*.npz")
    cache.write_bytes(damage)
    again = scan_labels(images, nc=80)
    assert again.files == first.files and again.problems == first.problems
    for a, b in zip(first.labels, again.labels, strict=True):
        np.testing.assert_array_equal(a, b)
    with np.load(cache) as z:  # written anew
        assert list(z["keep"]) == [0, 1]


def test_a_label_cache_whose_arrays_do_not_fit_is_rebuilt(data: Path, tmp_path: Path):
    images = sorted((data.parent / "images" / "train").glob("*.jpg"))
    first = scan_labels(images, nc=80)
    (cache,) = (tmp_path / "cache" / "labels").glob("*.npz")
    with np.load(cache) as z:
        arrays = dict(z)
    np.savez(cache.with_suffix(""), **{**arrays, "keep": np.array([0, 7])})  # an index past the images
    assert scan_labels(images, nc=80).files == first.files
