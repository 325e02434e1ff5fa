"""The user's own images for the CLIP subtask family (``data.source=images``, issue 23).

``data.root`` is either

- a manifest (``.csv`` or ``.parquet``) with columns ``path`` (absolute, or relative to the manifest),
  ``label`` (a class name from ``data.class_names``, or its index) and optionally ``split``
  (train / val / test); or
- an image folder: ``root/<split>/<class name>/*`` when ``root`` has train/val/test folders, else
  ``root/<class name>/*``.

Without splits, val and test are drawn stratified by class with ``data.split`` (val_size, test_size,
split_seed), as for the digit sets. Images are read with Pillow as RGB, resized to
``data.image_size`` when given (else all must share one size), and embedded through the same cache as
every other source: the cache key holds a digest of the pixels, labels and splits, so changed files
are embedded again. An unreadable file or an unknown label fails naming the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_table(root: Path) -> pd.DataFrame:
    """``path, label, split`` rows (split None when not given) of a manifest or an image folder."""
    if root.is_file():
        frame = pd.read_parquet(root) if root.suffix == ".parquet" else pd.read_csv(root)
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise ValueError(f"data.root {root}: missing column(s) {missing}; expected path, label and optionally split")
        paths = [p if Path(p).is_absolute() else str(root.parent / p) for p in frame["path"].astype(str)]
        splits = frame["split"].astype(str).str.strip().str.lower() if "split" in frame.columns else None
        return pd.DataFrame({"path": paths, "label": frame["label"].tolist(),
                             "split": splits.tolist() if splits is not None else None})
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is neither a manifest file nor an image folder")
    has_splits = all((root / s).is_dir() for s in SPLIT_NAMES)
    tops = [(root / s, s) for s in SPLIT_NAMES] if has_splits else [(root, None)]
    rows = []
    for top, split in tops:
        for class_dir in sorted(p for p in top.iterdir() if p.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append({"path": str(f), "label": class_dir.name, "split": split})
    if not rows:
        raise ValueError(f"data.root {root}: no images found (expected <class>/<image> or <split>/<class>/<image>)")
    return pd.DataFrame(rows)


def label_indices(labels: Sequence[object], class_names: Sequence[str], paths: Sequence[str], where: Path) -> np.ndarray:
    """Class indices from names (or integer indices); an unknown label fails naming its file."""
    index = {name: k for k, name in enumerate(class_names)}
    out = []
    for label, path in zip(labels, paths):
        text = str(label).strip()
        if text in index:
            out.append(index[text])
        elif text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
            out.append(int(text))
        else:
            raise ValueError(f"data.root {where}: {path} has label {label!r}, not one of data.class_names {list(class_names)}")
    return np.asarray(out, dtype=np.int64)


def read_images(paths: Sequence[str], image_size: int | None, where: Path) -> np.ndarray:
    """(N, H, W, 3) uint8 images; an unreadable file fails naming it."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if image_size:
                    im = im.resize((int(image_size), int(image_size)), Image.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
            raise ValueError(f"data.root {where}: cannot read image {path}: {err}") from None
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"data.root {where}: images of different sizes {sorted(shapes)[:4]}; set data.image_size to resize them")
    return np.stack(images)


def load_user_images(root: str | Path, class_names: Sequence[str],
                     image_size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    """Images, labels, splits (None when the source gives none) and a digest naming them in the cache key."""
    root = Path(root)
    table = read_table(root)
    labels = label_indices(table["label"], class_names, table["path"], root)
    splits = None
    if table["split"].notna().all():
        splits = table["split"].tolist()
        bad = sorted(set(splits) - set(SPLIT_NAMES))
        if bad:
            raise ValueError(f"data.root {root}: split values {bad}; expected {list(SPLIT_NAMES)}")
    images = read_images(table["path"].tolist(), image_size, root)
    digest = hashlib.sha256(images.tobytes())
    digest.update(labels.tobytes())
    digest.update(repr(splits).encode())
    return images, labels, splits, digest.hexdigest()[:16]
