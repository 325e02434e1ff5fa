"""Subtask labels computed from pixels (seed 000): brightness and edge complexity, three classes each.

The seed's rules, on the image as stored (uint8, 0..255):

- brightness: mean of the grayscale image (Pillow's ``convert("L")``); < 85 low, < 170 medium, else high;
- complexity: number of values of Pillow's ``FIND_EDGES`` output above a pixel threshold; < 50 low,
  < 150 medium, else high. On an RGB image the filter runs per channel and every channel value counts,
  as in the seed's ``np.sum(edges > threshold)``.

Pillow's 3 x 3 kernel filters copy the one-pixel frame of the image unfiltered, so a bright frame
counts as "edges"; ``drop_border=True`` leaves the frame out.

The seed's suggested alternative, percentile thresholds, is ``percentile_thresholds``: cut points at
given percentiles of the training split's scores, so each class holds about a third of the training
images. Fixed thresholds leave classes empty on data that are not natural photographs (a handwritten
digit is mostly black: its mean grey is ~33, every digit is "low").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

#: The seed's fixed cut points.
BRIGHTNESS_THRESHOLDS = (85.0, 170.0)
EDGE_COUNT_THRESHOLDS = (50.0, 150.0)


def _as_uint8_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W) grayscale or (N, H, W, 3) RGB uint8 images, checked."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 2:
        images = images[None]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, 3), got {images.shape}")
    return images


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image, mode="RGB" if image.ndim == 3 else "L")


def brightness_scores(images: np.ndarray) -> np.ndarray:
    """Mean grayscale value of each image (Pillow's ITU-R 601 ``convert("L")``), shape (N,)."""
    images = _as_uint8_images(images)
    return np.array([np.asarray(_pil(im).convert("L"), dtype=np.float64).mean() for im in images])


def edge_counts(images: np.ndarray, pixel_threshold: float, drop_border: bool = False) -> np.ndarray:
    """Number of ``FIND_EDGES`` output values above `pixel_threshold` per image, shape (N,).

    Args:
        images: (N, H, W) or (N, H, W, 3) uint8.
        pixel_threshold: An edge value counts when it is strictly greater than this.
        drop_border: Leave out the one-pixel frame that Pillow copies unfiltered.
    """
    images = _as_uint8_images(images)
    out = np.empty(len(images), dtype=np.int64)
    for i, im in enumerate(images):
        edges = np.asarray(_pil(im).filter(ImageFilter.FIND_EDGES))
        if drop_border:
            edges = edges[1:-1, 1:-1]
        out[i] = int(np.sum(edges > pixel_threshold))
    return out


def three_classes(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """0 below thresholds[0], 1 below thresholds[1], else 2 (the seed's ``<`` comparisons).

    A score equal to a threshold goes to the class above it.
    """
    lo, hi = (float(t) for t in thresholds)
    if not lo <= hi:
        raise ValueError(f"thresholds must be increasing, got {list(thresholds)}")
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(scores < lo, 0, np.where(scores < hi, 1, 2)).astype(np.int64)


def percentile_thresholds(scores: np.ndarray, percentiles: Sequence[float] = (100 / 3, 200 / 3)) -> tuple[float, float]:
    """Cut points at the given percentiles of `scores` (numpy's linear interpolation).

    Fit them on the training split only and apply them to every split, so no test image moves a threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("cannot take percentiles of zero scores")
    lo, hi = np.percentile(scores, list(percentiles))
    return float(lo), float(hi)


def subtask_labels(
    images: np.ndarray,
    brightness_thresholds: Sequence[float] = BRIGHTNESS_THRESHOLDS,
    edge_thresholds: Sequence[float] = EDGE_COUNT_THRESHOLDS,
    edge_pixel_threshold: float = 50.0,
    drop_border: bool = False,
) -> dict[str, np.ndarray]:
    """Brightness and complexity scores and their 3-class labels with the given cut points.

    Returns:
        ``brightness_score``, ``brightness`` (0/1/2), ``edge_count``, ``complexity`` (0/1/2), each (N,).
    """
    bright = brightness_scores(images)
    edges = edge_counts(images, edge_pixel_threshold, drop_border)
    return {
        "brightness_score": bright,
        "brightness": three_classes(bright, brightness_thresholds),
        "edge_count": edges,
        "complexity": three_classes(edges, edge_thresholds),
    }


def superclass_labels(labels: np.ndarray, superclass_map: Sequence[int]) -> np.ndarray:
    """Superclass of each class label through a list indexed by class (seed: animal 1 / vehicle 0).

    Raises:
        ValueError: If a label has no entry in the map.
    """
    labels = np.asarray(labels).astype(np.int64)
    table = np.asarray(list(superclass_map), dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= table.size):
        raise ValueError(f"superclass_map has {table.size} entries but labels run from {labels.min()} to {labels.max()}")
    return table[labels]
