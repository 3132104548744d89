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
