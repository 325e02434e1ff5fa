"""Frozen CLIP loading through open_clip's local-file path, and the on-disk embedding cache."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datamodules.clip_subtask.embeddings as ce  # noqa: E402
from datamodules.clip_subtask.embeddings import EmbeddingCache, is_torchscript, load_clip  # noqa: E402
from datamodules.clip_subtask.simulate import register_model_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


MICRO = "rigor-test-micro-clip"
MICRO_CFG = {"embed_dim": 16,
             "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "mlp_ratio": 1.0},
             "text_cfg": {"context_length": 6, "vocab_size": 12, "width": 16, "heads": 1, "layers": 1, "mlp_ratio": 1.0}}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A micro open_clip model (random weights), registered from a config, and a few images."""
    import open_clip

    register_model_config(MICRO, MICRO_CFG, tmp_path_factory.mktemp("configs"))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(MICRO)
    model.eval()
    images = np.random.default_rng(0).integers(0, 256, size=(5, 12, 12), dtype=np.uint8)
    return model, preprocess, images


def reference_embeddings(model, preprocess, images):
    from datamodules.clip_subtask.simulate import preprocessed_images

    with torch.no_grad():
        return model.encode_image(preprocessed_images(images, preprocess), normalize=True).numpy()


def save(model, path):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix == ".pt":
        torch.save({"state_dict": state}, path)  # a training checkpoint holding the state dict
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pt", ".pth"])
def test_every_weights_format_loads_through_the_real_path(micro, tmp_path, suffix):
    model, preprocess, images = micro
    path = save(model, tmp_path / f"weights{suffix}")
    clip = load_clip(MICRO, path)
    assert clip.weights_sha256 == ce.file_sha256(path) and not clip.model.training
    assert all(not p.requires_grad for p in clip.model.parameters())
    got = ce.encode_images(clip, images, batch_size=2)
    np.testing.assert_allclose(got, reference_embeddings(model, preprocess, images), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_torchscript_archive_is_refused_with_a_message_then_loads_when_allowed(micro, tmp_path):
    model, preprocess, images = micro
    traced = torch.jit.trace(model, (torch.randn(2, 3, 16, 16), torch.randint(0, 12, (2, 6))), strict=False, check_trace=False)
    path = tmp_path / "openai_style.pt"
    traced.save(str(path))
    assert is_torchscript(path) and not is_torchscript(save(model, tmp_path / "plain.pt"))
    with pytest.raises(ValueError, match="TorchScript.*allow_torchscript=true"):
        load_clip(MICRO, path)
    clip = load_clip(MICRO, path, allow_torchscript=True)
    np.testing.assert_allclose(ce.encode_images(clip, images), reference_embeddings(model, preprocess, images), rtol=1e-5, atol=1e-6)


def test_bad_weights_paths_fail_early(micro, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip(MICRO, tmp_path / "missing.safetensors")
    odd = tmp_path / "weights.npz.txt"
    odd.write_text("x")
    with pytest.raises(ValueError, match="suffix"):
        load_clip(MICRO, odd)
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_clip("no-such-clip", None)


def test_cache_is_hit_by_the_second_arm_and_invalidated_when_the_weights_change(micro, tmp_path, monkeypatch, caplog):
    model, _, images = micro
    weights = save(model, tmp_path / "w.safetensors")
    cache_dir = tmp_path / "cache"
    first = EmbeddingCache(cache_dir).get(load_clip(MICRO, weights), images, "toy:v1", "train")
    assert len(list(cache_dir.glob("*.npy"))) == 1

    # the second arm (a new process in a sweep: a new cache object) must not compute anything
    def refuse(*args, **kwargs):
        raise AssertionError("embeddings recomputed on a cache hit")

    monkeypatch.setattr(ce, "encode_images", refuse)
    second_arm = EmbeddingCache(cache_dir)
    with caplog.at_level(logging.INFO, logger="datamodules.clip_subtask.embeddings"):
        again = second_arm.get(load_clip(MICRO, weights), images, "toy:v1", "train")
    assert second_arm.hits == 1 and second_arm.misses == 0 and "cache hit" in caplog.text
    np.testing.assert_array_equal(first, again)
    monkeypatch.undo()

    # another split, another data set, QuickGELU: each its own entry
    cache = EmbeddingCache(cache_dir)
    cache.get(load_clip(MICRO, weights), images, "toy:v1", "val")
    cache.get(load_clip(MICRO, weights, force_quick_gelu=True), images, "toy:v1", "train")
    assert cache.misses == 2

    # new weights written to the same path: the content hash changes, the cache misses
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(0.5)
    save(model, weights)
    changed = EmbeddingCache(cache_dir)
    new = changed.get(load_clip(MICRO, weights), images, "toy:v1", "train")
    assert changed.misses == 1 and changed.hits == 0
    assert not np.allclose(new, first)


def test_a_warm_cache_never_builds_the_model_and_the_hash_memo_follows_the_file(micro, tmp_path):
    from datamodules.clip_subtask.embeddings import ClipSpec, memo_sha256

    model, _, images = micro
    weights = save(model, tmp_path / "w.safetensors")
    cold = ClipSpec(MICRO, str(weights), memo_dir=str(tmp_path / "memo"))
    EmbeddingCache(tmp_path / "cache").get(cold, images, "toy", "test")
    assert cold._loaded is not None  # a miss loads it
    warm = ClipSpec(MICRO, str(weights), memo_dir=str(tmp_path / "memo"))
    cache = EmbeddingCache(tmp_path / "cache")
    cache.get(warm, images, "toy", "test")
    assert cache.hits == 1 and warm._loaded is None
    assert warm.weights_sha256 == ce.file_sha256(weights)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # rewritten in place
    assert memo_sha256(weights, tmp_path / "memo") == ce.file_sha256(weights) != warm.weights_sha256


def test_other_weights_copied_with_cp_p_are_noticed(micro, tmp_path):
    """Issue 21 item 12: the hash memo keyed on (path, size, mtime) kept the old hash after `cp -p`."""
    import subprocess

    from datamodules.clip_subtask.embeddings import ClipSpec

    model, _, _ = micro
    first = save(model, tmp_path / "w.safetensors")
    with torch.no_grad():
        state = {k: v + 0.25 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(other))
    assert first.stat().st_size == other.stat().st_size
    os.utime(other, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns))  # same size, same mtime
    memo = str(tmp_path / "memo")
    before = ClipSpec(MICRO, str(first), memo_dir=memo).weights_sha256
    subprocess.run(["cp", "-p", str(other), str(first)], check=True)
    assert first.stat().st_mtime_ns == other.stat().st_mtime_ns
    after = ClipSpec(MICRO, str(first), memo_dir=memo).weights_sha256
    assert after == ce.file_sha256(other) != before


@pytest.mark.parametrize("keep", [0, 60, 0.5])
def test_a_truncated_embedding_cache_entry_is_recomputed_naming_the_file(micro, tmp_path, caplog, keep):
    """Issue 21 item 12: a truncated entry (0 bytes stopped the run with numpy's 'No data left in file')."""
    model, _, images = micro
    clip = load_clip(MICRO, save(model, tmp_path / "w.safetensors"))
    first = EmbeddingCache(tmp_path / "cache").get(clip, images, "toy", "train")
    (entry,) = (tmp_path / "cache").glob("*.npy")
    data = entry.read_bytes()
    entry.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    cache = EmbeddingCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="datamodules.clip_subtask.embeddings"):
        again = cache.get(clip, images, "toy", "train")
    assert cache.misses == 1 and str(entry) in caplog.text and "recomputing" in caplog.text
    np.testing.assert_array_equal(again, first)
    assert np.load(entry).shape == first.shape


def test_weights_of_another_architecture_or_truncated_name_the_file_and_the_cause(micro, tmp_path):
    """Issue 21 item 13: open_clip's own errors named neither the file nor what was wrong with it."""
    model, _, _ = micro
    other_cfg = {**MICRO_CFG, "vision_cfg": {**MICRO_CFG["vision_cfg"], "width": 48}}
    register_model_config("rigor-test-micro-clip-wide", other_cfg, tmp_path / "configs")
    weights = save(model, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match=r"w\.safetensors holds the weights of another architecture.*rigor-test-micro-clip-wide"):
        load_clip("rigor-test-micro-clip-wide", weights)
    for suffix in (".safetensors", ".pt"):
        path = save(model, tmp_path / f"cut{suffix}")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(ValueError, match=rf"cut\{suffix} \(\d+ bytes\) cannot be read.*truncated"):
            load_clip(MICRO, path)
