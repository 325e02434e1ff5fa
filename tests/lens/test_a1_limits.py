"""Issue 26 item 3, what limits A1: the ideal arc reader, the arc-preserving colour residual, the A1 variants."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from analysis.lens.ideal import ideal_auroc, ideal_reader_table, ideal_threshold, ideal_tpr_at_fpr
from analysis.lens.images import _annulus_index, arc_signal_kept, colour_residual, radial_median_model
from datamodules.lens.datamodule import LensDataModule
from tests.conftest import compose
from tests.lens.test_matched_design import _diff

# --- the ideal reader -----------------------------------------------------------------------------


def test_one_template_is_the_two_gaussian_closed_form() -> None:
    s = np.array([0.0, 0.5, 2.0, 4.0, 10.0])
    # lens N(s, 1) against arcless N(0, 1): P(X > Y) = Phi(s / sqrt 2)
    assert np.allclose(ideal_auroc(s, 1), stats.norm.cdf(s / np.sqrt(2)), atol=1e-12)
    # threshold at FPR f is the normal's upper f quantile; the lens is flagged with prob Phi(s - t)
    t = stats.norm.isf(1e-3)
    assert ideal_threshold(1e-3, 1) == pytest.approx(t, rel=1e-12)
    assert np.allclose(ideal_tpr_at_fpr(s, 1e-3, 1), stats.norm.sf(t - s), atol=1e-12)
    assert ideal_tpr_at_fpr([0.0], 1e-3, 1)[0] == pytest.approx(1e-3)  # no arc: flagged at the FPR


@pytest.mark.parametrize("n", [2, 30])
def test_searching_reader_matches_monte_carlo(n: int) -> None:
    rng = np.random.default_rng(0)
    reps = 200_000
    arcless = rng.standard_normal((reps, n)).max(axis=1)
    t = ideal_threshold(0.01, n)
    assert (arcless > t).mean() == pytest.approx(0.01, abs=4 * np.sqrt(0.01 * 0.99 / reps))
    for s in (0.0, 1.5, 3.0):
        lens = np.maximum(s + rng.standard_normal(reps), rng.standard_normal((reps, n - 1)).max(axis=1))
        se = 0.5 / np.sqrt(reps)
        assert ideal_auroc([s], n)[0] == pytest.approx((lens > arcless).mean(), abs=5 * se)
        assert ideal_tpr_at_fpr([s], 0.01, n)[0] == pytest.approx((lens > t).mean(), abs=5 * se)
    # no arc: the lens and the arcless score have the same law, so AUROC 1/2 and TPR = FPR
    assert ideal_auroc([0.0], n)[0] == pytest.approx(0.5, abs=1e-6)
    assert ideal_tpr_at_fpr([0.0], 0.01, n)[0] == pytest.approx(0.01, rel=1e-9)


def test_searching_costs_and_the_table_bins() -> None:
    s = np.array([1.0, 4.0, 6.0, 12.0, 25.0])
    # more templates: a higher noise floor, never a better reader
    aucs = [ideal_auroc(s, n) for n in (1, 100, 10_000)]
    assert np.all(aucs[0] >= aucs[1]) and np.all(aucs[1] >= aucs[2]) and aucs[2][0] < aucs[0][0] - 0.1
    rows = ideal_reader_table(s, [0, 5, 20, 100], [1, 100])
    by = {(r["n_templates"], r["bin"]): r for r in rows}
    assert [by[(1, b)]["count"] for b in ("0-5", "5-20", "20-100", "all")] == [2, 2, 1, 5]
    assert by[(100, "0-5")]["auroc"] == pytest.approx(ideal_auroc([1.0, 4.0], 100).mean())
    assert by[(1, "all")]["tpr"] == pytest.approx(ideal_tpr_at_fpr(s, 1e-3, 1).mean())
    assert by[(1, "5-20")]["count"] == 2  # 6 and 12; 20 itself would open the next bin
    with pytest.raises(ValueError, match="snr"):
        ideal_auroc([-1.0])
    with pytest.raises(ValueError, match="n_templates"):
        ideal_auroc([1.0], 0)
    with pytest.raises(ValueError, match="fpr"):
        ideal_threshold(0.0)


# --- the colour residual and the arc-signal check -------------------------------------------------

SIZE = 31
COLOURS = np.array([0.2, 0.5, 1.0])  # host flux per band relative to z (red: faint in g)


def _ring_host_and_arc(ring: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A host constant on every 1-pixel annulus (so the radial median models it exactly) and a full ring
    arc on annulus `ring` in g only (a blue Einstein ring: the case the per-band median absorbs)."""
    rings, _ = _annulus_index(SIZE)
    profile = 100.0 * np.exp(-rings / 3.0)
    host = (COLOURS[:, None, None] * profile)[None].astype(np.float32)
    arc = np.zeros_like(host)
    arc[0, 0][rings == ring] = 5.0
    return host, arc


def test_colour_residual_removes_a_one_colour_host_and_keeps_a_ring_arc() -> None:
    host, arc = _ring_host_and_arc()
    assert np.allclose(colour_residual(host, ref_channel=2), 0.0, atol=1e-4)  # alpha = colour ratio exactly
    kept = colour_residual(host + arc, ref_channel=2)
    assert np.allclose(kept, arc, atol=1e-4)  # the g ring survives whole; r and z stay empty
    # the per-band radial median absorbs the same ring entirely: that is the loss the colour step avoids
    per_band = (host + arc) - radial_median_model(host + arc)
    assert np.allclose(per_band, 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="ref_channel"):
        colour_residual(host, ref_channel=3)


def test_arc_signal_kept_by_hand() -> None:
    rng = np.random.default_rng(1)
    host, arc = _ring_host_and_arc()
    sigma = np.array([0.5, 1.0, 2.0], dtype=np.float32)[None, :, None, None]
    noise = (rng.standard_normal((4, 3, SIZE, SIZE)) * sigma).astype(np.float32)
    without = host + noise
    with_arc = without + arc
    assert np.allclose(arc_signal_kept(with_arc, without, lambda x: x, background_radius=12), 1.0)
    assert np.allclose(arc_signal_kept(with_arc, without, lambda x: 3.0 * x, background_radius=12), 1.0)  # S/N is scale-free
    # a step that doubles only g's noise halves g's S/N, and all of this arc's S/N is in g
    g_noise = np.concatenate([noise[:, :1], np.zeros_like(noise[:, 1:])], axis=1)
    doubled = lambda x: x + g_noise  # noqa: E731  (the same noise again on both: the arc stays, g's noise doubles)
    assert np.allclose(arc_signal_kept(with_arc, without, doubled, background_radius=12), 0.5, rtol=0.05)
    # the per-band median loses the ring; the colour step keeps nearly all of it
    median = arc_signal_kept(with_arc, without, lambda x: x - radial_median_model(x), background_radius=12)
    colour = arc_signal_kept(with_arc, without, lambda x: colour_residual(x, 2), background_radius=12)
    assert np.all(median < 0.5) and np.all(colour > 0.9)


def test_datamodule_colour_preprocessing(toy_lens_manifest) -> None:
    dm = LensDataModule(manifest_path=str(toy_lens_manifest), batch_size=16, preprocessing="colour",
                        colour_fit_radius=8.0, clip=None)
    dm.setup()
    raw = np.asarray(dm.inputs["val"].images[dm.inputs["val"].rows[:4]], dtype=np.float32)
    ref = LensDataModule(manifest_path=str(toy_lens_manifest), batch_size=16, preprocessing="raw", clip=None)
    ref.setup()
    # colour = the raw pipeline's normalisation applied to colour_residual(raw, last band)
    ref.preprocessing, ref.clip = "raw", None
    expected = ref.preprocess(colour_residual(raw, len(dm.bands) - 1, 8.0))
    assert np.allclose(dm.preprocess(raw), expected, atol=1e-5)
    bad = LensDataModule(manifest_path=str(toy_lens_manifest), batch_size=16, preprocessing="colour", colour_ref_band="i")
    with pytest.raises(ValueError, match="colour_ref_band='i'"):
        bad.setup()
    with pytest.raises(ValueError, match="colour_fit_radius"):
        LensDataModule(manifest_path=str(toy_lens_manifest), preprocessing="colour", colour_fit_radius=0)


# --- the A1 variants differ from A1 only where they say ---------------------------------------------


@pytest.mark.parametrize("variant, expected", [
    ("raw", {".data.preprocessing": "raw"}),
    ("colour", {".data.preprocessing": "colour", ".data.colour_ref_band": None, ".data.colour_fit_radius": 12.0}),
    ("long", {".trainer.max_epochs": 150}),
    ("lr1e3", {".model.optimizer.lr": 1e-3}),
])
def test_a1_variants_change_one_thing(variant: str, expected: dict) -> None:
    a1 = OmegaConf.to_container(compose(["experiment=lens_a1"]))
    other = OmegaConf.to_container(compose([f"experiment=lens_a1_{variant}"]))
    assert other["experiment_name"] == f"lens_a1_{variant}"
    for cfg in (a1, other):
        for key in ("experiment_name", "hydra", "tags"):
            cfg.pop(key, None)
    # (a key set to null reads like a missing one in _diff: it is checked by its value below)
    assert _diff(a1, other) == sorted(p for p, v in expected.items() if v is not None)
    for path, value in expected.items():
        node = other
        for key in path.strip(".").split("."):
            node = node[key]
        assert node == value
