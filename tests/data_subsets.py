"""Small data yamls over the real coco128 images (list files with absolute paths), written under a temp folder."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.yolo.data import load_data_config


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
