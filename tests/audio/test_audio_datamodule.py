"""AudioDataModule: group splits with a dev carve-out, the audit before every run, processor inputs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from analysis.group_splits import LeakageError  # noqa: E402
from datamodules.audio.datamodule import AudioDataModule, assign_splits  # noqa: E402
from datamodules.audio.simulate import AUDIO_NAME  # noqa: E402

TINY = dict(sample_rate=16000, window_seconds=1, hop_length=160, n_fft=400, num_mel_bins=80, encoder_layers=1,
            encoder_heads=2, encoder_ffn_dim=32, encoder_dim=16, hidden_size=16, intermediate_size=32, num_layers=1,
            num_heads=2, num_kv_heads=1, max_positions=64)
SIM = {"n_speakers": 6, "clips_per_speaker": 3, "n_sources": 7, "clips_per_source": 2, "test_fraction": 0.3}
PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|>Speech? Answer:"


def _dm(tmp_path, **kw) -> AudioDataModule:
    args = dict(cache_dir=str(tmp_path), simulation=SIM, dev_fraction=0.3, tiny=TINY, prompt=PROMPT, batch_size=4, seed=1)
    args.update(kw)
    return AudioDataModule(**args)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio_dm")


def test_splits_batches_and_frames(sim_dir) -> None:
    dm = _dm(sim_dir)
    dm.prepare_data()
    dm.setup("fit")
    frame = dm.manifest()
    groups = {s: set(frame.loc[frame.split == s, "group"]) for s in ("train", "val", "test")}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert dm.audit["shared_groups"] == 0 and dm.audit["val_groups"] >= 2  # one speaker and one source at least
    # dev is carved from train: the manifest's test rows stay test
    manifest = pd.read_parquet(dm.resolved_manifest())
    assert set(manifest.loc[manifest.split == "test", "sample_id"]) == set(frame.loc[frame.split == "test", "sample_id"])
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_features", "feature_attention_mask", "input_ids", "attention_mask", "target", "index"}
    assert batch["input_features"].shape[1:] == (80, 100) and batch["feature_attention_mask"].shape[1:] == (100,)
    # 100 frames -> 25 audio tokens in the prompt
    audio_id = dm.processor().tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert (batch["input_ids"] == audio_id).sum(dim=1).tolist() == [25] * 4
    for split in ("train", "val", "test"):
        f = dm.split_frame(split)
        assert len(f) == len(dm.datasets[split]) and {"sample_id", "target", "group", "snr_db"} <= set(f.columns)
        assert (f["split"] == split).all()  # the recorded split travels with the frame
        item = dm.datasets[split][3]
        assert int(item["target"]) == int(f["target"].iloc[3]) and int(item["index"]) == 3


def test_features_match_the_processor_on_the_same_clip(sim_dir) -> None:
    dm = _dm(sim_dir)
    dm.setup("fit")
    clip = dm.clips("test")[2]
    direct = dm.processor().feature_extractor([clip], sampling_rate=16000, return_tensors="np", padding="max_length")
    ours = dm.datasets["test"][2]["input_features"].numpy()
    np.testing.assert_allclose(ours, direct["input_features"][0], rtol=1e-5, atol=1e-5)


def test_audit_refuses_a_manifest_whose_splits_share_a_group(sim_dir, tmp_path) -> None:
    dm = _dm(sim_dir)
    manifest = pd.read_parquet(dm.resolved_manifest())
    leaked_group = manifest.loc[manifest.split == "test", "group"].iloc[0]
    row = manifest.index[manifest.group == leaked_group][0]
    manifest.loc[row, "split"] = "train"  # one clip of a test group moved to train
    (tmp_path / "m").mkdir()
    manifest.to_parquet(tmp_path / "m" / "manifest.parquet")
    np.save(tmp_path / "m" / AUDIO_NAME, np.load(dm.resolved_manifest().parent / AUDIO_NAME))
    bad = _dm(sim_dir, manifest_path=str(tmp_path / "m" / "manifest.parquet"))
    with pytest.raises(LeakageError, match=leaked_group):
        bad.setup("fit")


def test_assign_splits_redraws_and_checks_values() -> None:
    frame = pd.DataFrame({"group": [f"g{i // 2}" for i in range(20)], "label": [int(i < 10) for i in range(20)],
                          "split": ["train"] * 20})
    split = assign_splits(frame, 0.2, 0.25, dev_seed=0, resplit_seed=None, source="m.parquet")
    assert set(split) == {"train", "val"}  # the manifest had no test rows: none are made
    split = assign_splits(frame, 0.4, 0.25, dev_seed=0, resplit_seed=3, source="m.parquet")
    assert set(split) == {"train", "val", "test"}
    assert frame.assign(s=split).groupby("group")["s"].nunique().max() == 1
    with pytest.raises(ValueError, match="column 'split' has \\['dev'\\]"):
        assign_splits(frame.assign(split="dev"), 0.2, 0.25, 0, None, "m.parquet")


def test_missing_column_is_named(sim_dir, tmp_path) -> None:
    dm = _dm(sim_dir)
    manifest = pd.read_parquet(dm.resolved_manifest()).drop(columns=["group"])
    manifest.to_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(ValueError, match=r"manifest.parquet: missing column\(s\) \['group'\]"):
        _dm(sim_dir, manifest_path=str(tmp_path / "manifest.parquet")).manifest()


def _copy(dm: AudioDataModule, out, edit=None, audio_edit=None):
    """A copy of dm's manifest and audio under out, edited."""
    manifest = pd.read_parquet(dm.resolved_manifest())
    audio = np.load(dm.resolved_manifest().parent / AUDIO_NAME)
    out.mkdir(parents=True, exist_ok=True)
    (edit or (lambda m: m))(manifest).to_parquet(out / "manifest.parquet")
    np.save(out / AUDIO_NAME, (audio_edit or (lambda a: a))(audio))
    return out / "manifest.parquet"


def test_group_ids_differing_only_by_case_or_spaces_are_one_group(sim_dir, tmp_path) -> None:
    """Issue 21 item 15: ' Spk_A' in train and 'spk_a' in test passed the audit."""
    dm = _dm(sim_dir)
    manifest = pd.read_parquet(dm.resolved_manifest())
    group = manifest.loc[manifest.split == "test", "group"].iloc[0]
    row = manifest.index[manifest.group == group][0]

    def leak(m):
        m.loc[row, "split"] = "train"
        m.loc[row, "group"] = f"  {group.upper()} "
        return m

    with pytest.raises(LeakageError, match=group.casefold()):
        _dm(sim_dir, manifest_path=str(_copy(dm, tmp_path / "m", leak))).manifest()


def test_zero_length_nan_and_truncated_clips_are_named(sim_dir, tmp_path) -> None:
    """Issue 21 item 15: a zero-length clip was trained on; NaN samples and a truncated array named nothing."""
    dm = _dm(sim_dir)
    manifest = pd.read_parquet(dm.resolved_manifest())
    victim = manifest["sample_id"].iloc[5]

    def empty(m):
        m.loc[5, "num_samples"] = 0
        return m

    with pytest.raises(ValueError, match=rf"1 clip\(s\) with num_samples <= 0.*{victim} \(0\)"):
        _dm(sim_dir, manifest_path=str(_copy(dm, tmp_path / "empty", empty))).manifest()

    def nan(a):
        a[5, 100] = np.nan
        return a

    bad = _dm(sim_dir, manifest_path=str(_copy(dm, tmp_path / "nan", audio_edit=nan)))
    split = bad.manifest().loc[5, "split"]
    with pytest.raises(ValueError, match=rf"audio.npy: 1 clip\(s\) hold NaN or inf samples: {victim}"):
        bad.audio(split)
    path = _copy(dm, tmp_path / "cut")
    array = path.parent / AUDIO_NAME
    array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut/audio.npy: the audio array cannot be read .*truncated"):
        _dm(sim_dir, manifest_path=str(path)).setup("fit")


def test_clips_at_8_khz_are_refused_or_resampled(sim_dir, tmp_path, caplog) -> None:
    """Issue 21 item 8: clips at 8 kHz reached the 16 kHz processor without a word."""
    import logging

    from scipy.signal import resample_poly

    dm = _dm(sim_dir)
    dm.setup("fit")

    def at_8k(m):  # every clip written at 8 kHz, as import_audio_clips(..., sample_rate=8000) records it
        return m.assign(sample_rate=8000, num_samples=(m["num_samples"] + 1) // 2)

    def halve(a):
        return np.stack([resample_poly(x.astype(np.float64), 1, 2).astype(np.float32) for x in a])

    path = str(_copy(dm, tmp_path / "8k", at_8k, halve))
    with pytest.raises(ValueError, match=r"clip\(s\) at 8000 Hz, but the processor expects 16000 Hz.*data.resample=true"):
        _dm(sim_dir, manifest_path=path).manifest()
    with caplog.at_level(logging.WARNING, logger="datamodules.audio.datamodule"):
        resampled = _dm(sim_dir, manifest_path=path, resample=True)
        resampled.setup("fit")
    assert "resampling" in caplog.text and "8000 Hz to the processor's 16000 Hz" in caplog.text
    clips, originals = resampled.clips("test"), dm.clips("test")
    assert [len(c) for c in clips] == [len(c) + len(c) % 2 for c in originals]
    # back at 16 kHz: the same sound (band-limited to 4 kHz by the 8 kHz copy), so close features
    corr = np.corrcoef(clips[2][: len(originals[2])], originals[2])[0, 1]
    assert corr > 0.5
    # a manifest at the processor's rate is read as before
    same = _dm(sim_dir, manifest_path=str(_copy(dm, tmp_path / "16k", lambda m: m.assign(sample_rate=16000))))
    same.setup("fit")
    np.testing.assert_array_equal(same.clips("test")[2], originals[2])


def test_the_tiny_base_key_follows_the_clips_content(sim_dir, tmp_path) -> None:
    """Issue 21 item 12: the key was the manifest path and the sample ids, so rewritten clips reused the old base."""
    dm = _dm(sim_dir)
    path = _copy(dm, tmp_path / "m")
    before = _dm(sim_dir, manifest_path=str(path)).data_key()
    np.save(path.parent / AUDIO_NAME, np.load(path.parent / AUDIO_NAME) * 0.5)  # every clip changed, names kept
    after = _dm(sim_dir, manifest_path=str(path)).data_key()
    assert before != after
    assert _dm(sim_dir, manifest_path=str(path)).data_key() == after  # stable


def test_streaming_items_equal_the_in_memory_rows(sim_dir, tmp_path) -> None:
    """data.streaming reads and encodes clip by clip, right-padding prompts to the split's longest."""
    import torch
    from scipy.io import wavfile

    from datamodules.audio.simulate import import_audio_clips

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):  # clips of different lengths: prompts of different lengths to pad
        n = int(16000 * (0.4 + 0.05 * i))
        wavfile.write(tmp_path / f"c{i}.wav", 16000, (rng.standard_normal(n) * 2000).astype(np.int16))
        rows.append({"audio_path": f"c{i}.wav", "label": "SPEECH" if i % 2 else "NONSPEECH", "group": f"g{i}",
                     "split": "test" if i >= 8 else "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    manifest = import_audio_clips(tmp_path / "meta.csv", tmp_path / "clips", progress=False)
    for kw in ({"manifest_path": str(manifest), "dev_fraction": 0.25},):
        memory, stream = _dm(sim_dir, **kw), _dm(sim_dir, streaming=True, **kw)
        memory.setup("fit")
        stream.setup("fit")
        for split in ("train", "val", "test"):
            assert len(stream.datasets[split]) == len(memory.datasets[split])
            for i in range(len(memory.datasets[split])):
                a, b = memory.datasets[split][i], stream.datasets[split][i]
                assert set(a) == set(b)
                for k in a:
                    assert torch.equal(a[k], b[k]), (split, i, k)
        batch = next(iter(stream.train_dataloader()))
        assert batch["input_ids"].shape[0] == 4
