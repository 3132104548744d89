"""Small data yamls over the real coco128 images (list files with absolute paths), written under a temp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.labels import label_path


def subset_yaml(coco128_yaml: Path, folder: Path, **splits: slice) -> Path:
    """``folder/subset.yaml`` whose splits (``train=slice(0, 8)``, ``val=...``, ``test=...``) list those
    coco128 images; nothing is written into the assets folder."""
    d = load_data_config(coco128_yaml)
    doc: dict = {"path": str(folder), "names": dict(enumerate(d.names))}
    for split, part in splits.items():
        (folder / f"{split}.txt").write_text("\n".join(str(p) for p in d.train[part]) + "\n")
        doc[split] = f"{split}.txt"
    (folder / "subset.yaml").write_text(yaml.safe_dump(doc))
    return folder / "subset.yaml"


def small_dataset(assets: Path, root: Path, n: int = 6) -> Path:
    """``root/small.yaml`` over the first ``n`` coco128 val images copied under ``root`` (train and val alike)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for f in sorted((assets / "coco128" / "images" / "val2017").glob("*.jpg"))[:n]:
        shutil.copy(f, root / "images" / f.name)
        if label_path(f).is_file():
            shutil.copy(label_path(f), root / "labels" / label_path(f).name)
    names = (assets / "coco128.yaml").read_text().split("names:", 1)[1]
    y = root / "small.yaml"
    y.write_text(f"path: .\ntrain: images\nval: images\nnames:{names}")
    return y


def copied_splits(assets: Path, root: Path, source: str = "train2017", **counts: int) -> Path:
    """``root/data.yaml`` over copies (images and labels, which a test may then damage) of the first coco128
    ``source`` images: ``counts`` per split in order (``train=3, val=3``), in ``root/images/<split>``."""
    images = iter(sorted((assets / "coco128" / "images" / source).glob("*.jpg")))
    doc: dict = {"path": str(root)}
    for split, n in counts.items():
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
        for _ in range(n):
            image = next(images)
            shutil.copy(image, root / "images" / split / image.name)
            if label_path(image).is_file():
                shutil.copy(label_path(image), root / "labels" / split / label_path(image).name)
        doc[split] = f"images/{split}"
    doc["names"] = yaml.safe_load((assets / "coco128.yaml").read_text())["names"]
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    return root / "data.yaml"
