"""Subtask labels from pixels (seed 000): hand-built images, threshold edges, and a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import convolve

from analysis.clip_subtask.subtasks import (
    brightness_scores,
    edge_counts,
    percentile_thresholds,
    subtask_labels,
    superclass_labels,
    three_classes,
)


def gray(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size), value, dtype=np.uint8)


def test_brightness_of_flat_images_and_the_seed_cut_points():
    images = np.stack([gray(0), gray(84), gray(85), gray(169), gray(170), gray(255)])
    assert brightness_scores(images).tolist() == [0, 84, 85, 169, 170, 255]
    # < 85 low, < 170 medium, else high: a value on a cut point goes up
    assert subtask_labels(images)["brightness"].tolist() == [0, 0, 1, 1, 2, 2]


def test_rgb_brightness_uses_pillow_itu601_weights():
    image = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    image[..., 0] = 100  # R only: L = 100 * 299/1000 = 29.9 -> Pillow rounds to 30
    assert brightness_scores(image)[0] == pytest.approx(30.0)
    image[..., 1] = 200  # + G: 29.9 + 117.4 = 147.3 -> 147
    assert brightness_scores(image)[0] == pytest.approx(147.0)


def pillow_edges_reference(image: np.ndarray) -> np.ndarray:
    """FIND_EDGES by hand: 8 x centre - 8 neighbours, clipped to 0..255; the 1-pixel frame copied as it is."""
    kernel = -np.ones((3, 3))
    kernel[1, 1] = 8
    out = np.clip(convolve(image.astype(float), kernel, mode="nearest"), 0, 255)
    out[0, :], out[-1, :], out[:, 0], out[:, -1] = image[0, :], image[-1, :], image[:, 0], image[:, -1]
    return out


def test_edge_count_of_a_dark_square_matches_a_hand_reference():
    image = gray(200, 6)
    image[2:4, 2:4] = 10
    ref = pillow_edges_reference(image)
    # the interior ring around the square is bright, the square itself 0; the frame is copied (200)
    assert edge_counts(image[None], 50)[0] == int(np.sum(ref > 50))
    assert edge_counts(image[None], 50)[0] == 20 + 12  # 20 frame pixels + 12 interior ring pixels
    assert edge_counts(image[None], 50, drop_border=True)[0] == 12
    # strictly greater: neither the copied frame (200) nor the ring's corners (190) count at 200, its 8 sides (255) do
    assert edge_counts(image[None], 200, drop_border=False)[0] == 8


def test_edge_counts_match_the_reference_on_random_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 12, 12), dtype=np.uint8)
    for threshold in (0, 50, 254):
        expected = [int(np.sum(pillow_edges_reference(im) > threshold)) for im in images]
        assert edge_counts(images, threshold).tolist() == expected


def test_rgb_edges_count_every_channel():
    image = np.zeros((1, 5, 5, 3), dtype=np.uint8)
    image[0, 2, 2] = [100, 50, 0]
    # centre: 8 x value in R and G (clipped 255 > 30), neighbours 0; blue stays 0
    assert edge_counts(image, 30)[0] == 2


def test_complexity_cut_points_at_50_and_150():
    scores = np.array([0, 49, 50, 149, 150, 10_000])
    assert three_classes(scores, (50, 150)).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="increasing"):
        three_classes(scores, (150, 50))


def test_percentile_thresholds_fill_three_classes_where_fixed_ones_do_not():
    # digit-like: mostly black images; every one is "low" under the fixed 85/170
    rng = np.random.default_rng(1)
    means = rng.uniform(20, 60, size=300)
    fixed = three_classes(means, (85, 170))
    assert np.bincount(fixed, minlength=3).tolist() == [300, 0, 0]
    cuts = percentile_thresholds(means, (100 / 3, 200 / 3))
    assert cuts == pytest.approx(tuple(np.percentile(means, [100 / 3, 200 / 3])))
    counts = np.bincount(three_classes(means, cuts), minlength=3)
    assert counts.tolist() == [100, 100, 100]
    with pytest.raises(ValueError):
        percentile_thresholds(np.array([]))


def test_superclass_map_and_bad_input():
    cifar = [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]  # the seed: vehicles 0, animals 1
    assert superclass_labels(np.array([0, 2, 8, 7]), cifar).tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="superclass_map has 10 entries"):
        superclass_labels(np.array([10]), cifar)
    with pytest.raises(ValueError, match="uint8"):
        brightness_scores(np.zeros((1, 4, 4), dtype=np.float32))
