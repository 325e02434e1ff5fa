"""The CLIP subtask datamodule on scikit-learn's digits with a micro CLIP pretrained for one epoch."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datamodules.clip_subtask.datamodule import ClipSubtaskDataModule  # noqa: E402
from datamodules.clip_subtask.simulate import DIGIT_NAMES, CaptionTokenizer, load_digit_images  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


MICRO_CFG = {"embed_dim": 16,
             "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "mlp_ratio": 1.0},
             "text_cfg": {"context_length": 8, "width": 16, "heads": 1, "layers": 1, "mlp_ratio": 1.0}}


def make(cache_dir, mode="percentile", batch_size=64, seed=0):
    return ClipSubtaskDataModule(
        source="sklearn_digits", class_names=list(DIGIT_NAMES), superclass_map=[1, 0, 0, 0, 0, 0, 1, 0, 1, 1],
        split={"val_size": 150, "test_size": 300, "split_seed": 0},
        subtasks={"mode": mode, "brightness_thresholds": [85, 170], "edge_thresholds": [50, 150], "edge_pixel_threshold": 50,
                  "percentiles": [100 / 3, 200 / 3], "drop_border": False},
        clip={"model": "rigor-test-tiny", "pretrained": None, "normalize": True, "batch_size": 512, "device": "cpu",
              "tiny": {"model_name": "rigor-test-tiny", "model_cfg": MICRO_CFG,
                       "pretrain": {"epochs": 1, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "seed": 0,
                                    "caption_template": "a photo of the digit {}"}}},
        cache_dir=str(cache_dir), batch_size=batch_size, seed=seed,
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clip_cache")


def test_splits_labels_frames_and_batches(cache_dir):
    dm = make(cache_dir)
    dm.setup("fit")
    sizes = {s: len(dm.split_frame(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 1797 - 450, "val": 150, "test": 300}
    ids = [set(dm.split_frame(s)["sample_id"]) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    _, labels = load_digit_images("sklearn_digits")
    # stratified: every class keeps its share (within one sample) in the test split
    test_counts = np.bincount(dm.split_frame("test")["target"], minlength=10)
    assert np.all(np.abs(test_counts - 300 * np.bincount(labels) / len(labels)) <= 1)
    frame = dm.split_frame("train")
    for col in ("sample_id", "target", "superclass", "brightness", "complexity", "brightness_score", "edge_count"):
        assert col in frame.columns
    assert frame["superclass"].tolist() == [[1, 0, 0, 0, 0, 0, 1, 0, 1, 1][t] for t in frame["target"]]
    # percentile cut points from train: three non-empty classes of roughly a third each on train
    for name in ("brightness", "complexity"):
        counts = np.bincount(frame[name], minlength=3)
        assert counts.min() > 0.2 * len(frame), (name, counts)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"embedding", "target", "superclass", "brightness", "complexity", "index"}
    assert batch["embedding"].shape == (64, 16) and batch["embedding"].dtype == torch.float32
    assert torch.allclose(batch["embedding"].norm(dim=1), torch.ones(64), atol=1e-5)  # normalised
    # a batch row is the frame row its index names
    row = frame.iloc[int(batch["index"][0])]
    assert int(batch["target"][0]) == row["target"] and int(batch["complexity"][0]) == row["complexity"]
    assert dm.cache.misses == 3


def test_second_arm_reuses_the_cached_weights_and_embeddings(cache_dir):
    first = make(cache_dir)
    first.setup("fit")
    other = make(cache_dir, batch_size=128, seed=7)  # arm B, another seed: the same splits and embeddings
    other.setup("fit")
    assert other.cache.hits == 3 and other.cache.misses == 0
    assert other.weights_path == first.weights_path
    for split in ("train", "val", "test"):
        assert other.split_frame(split)["sample_id"].tolist() == first.split_frame(split)["sample_id"].tolist()
        assert torch.equal(other.split_tensors(split)["embedding"], first.split_tensors(split)["embedding"])


def test_fixed_thresholds_leave_digit_classes_empty(cache_dir, caplog):
    dm = make(cache_dir, mode="fixed")
    dm.setup("fit")
    assert dm.thresholds["brightness"] == (85.0, 170.0)
    assert np.bincount(dm.split_frame("train")["brightness"], minlength=3).min() == 0
    assert "empty class" in caplog.text


def test_bad_configs_fail_early(tmp_path):
    with pytest.raises(ValueError, match="data.source"):
        ClipSubtaskDataModule("mnist", DIGIT_NAMES, [0] * 10, {}, {"mode": "fixed"}, {}, str(tmp_path))
    with pytest.raises(ValueError, match="superclass_map has 3 entries"):
        ClipSubtaskDataModule("sklearn_digits", DIGIT_NAMES, [0, 1, 0], {}, {"mode": "fixed"}, {}, str(tmp_path))
    dm = ClipSubtaskDataModule("cifar10", DIGIT_NAMES, [0] * 10, {"val_size": 10, "split_seed": 0}, {"mode": "fixed"}, {},
                               str(tmp_path), root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        dm.split_images()


def test_caption_tokenizer_puts_end_of_text_last():
    captions = [f"a photo of the digit {n}" for n in DIGIT_NAMES]
    tok = CaptionTokenizer(captions, 8)
    ids = tok(captions[:2])
    assert ids.shape == (2, 8) and ids[0, 0] == tok.sot
    assert int(ids[0].argmax()) == 7  # start, six words, then end of text: the pooled position
    assert ids.max() == tok.eot == tok.vocab_size - 1
    with pytest.raises(ValueError, match="vocabulary"):
        tok(["a photo of a cat"])
    with pytest.raises(ValueError, match="context_length"):
        CaptionTokenizer(captions, 4)


def test_cifar10_keeps_its_test_split_and_holds_out_a_stratified_val(tmp_path, monkeypatch):
    import datamodules.clip_subtask.datamodule as mod

    rng = np.random.default_rng(0)
    fake = {"train": (rng.integers(0, 256, (500, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), 50)),
            "test": (rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), 10))}
    monkeypatch.setattr(mod, "load_cifar10", lambda root: fake)
    dm = ClipSubtaskDataModule("cifar10", [f"c{k}" for k in range(10)], [0, 0, 1, 1, 1, 1, 1, 1, 0, 0],
                               {"val_size": 50, "test_size": None, "split_seed": 0}, {"mode": "fixed"}, {}, str(tmp_path),
                               root=str(tmp_path))
    splits = dm.split_images()
    assert [len(splits[s][1]) for s in ("train", "val", "test")] == [450, 50, 100]
    assert np.bincount(splits["val"][1]).tolist() == [5] * 10  # stratified
    assert np.array_equal(splits["test"][0], fake["test"][0])  # the official test images, in order
    assert not set(splits["train"][2]) & set(splits["val"][2])


def test_the_tiny_clips_own_saved_weights_load_as_pretrained(cache_dir, tmp_path):
    """Issue 21 item 13: its architecture was registered only by a process that pretrained it ('unknown architecture')."""
    import open_clip

    first = make(cache_dir)
    first.setup("fit")
    open_clip.factory._MODEL_CONFIGS.pop("rigor-test-tiny", None)  # a fresh process: nothing registered
    again = make(tmp_path)  # another cache: the embeddings are computed from the given file
    again.clip_cfg["pretrained"] = first.weights_path
    again.setup("fit")
    assert again.weights_path == first.weights_path and again.cache.misses == 3
    assert torch.allclose(again.split_tensors("test")["embedding"], first.split_tensors("test")["embedding"], atol=1e-6)
