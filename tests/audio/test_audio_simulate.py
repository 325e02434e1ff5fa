"""The embedded audio simulation: eSpeak NG speech, mixing at an SNR, groups, manifest format, cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datamodules.audio.simulate import (
    AUDIO_NAME,
    ESpeak,
    coloured_noise,
    config_hash,
    ensure_audio_dataset,
    import_audio_clips,
    mix_at_snr,
    normalise_labels,
)

TINY = {"n_speakers": 4, "clips_per_speaker": 3, "n_sources": 7, "clips_per_source": 2, "test_fraction": 0.3}


def test_espeak_synthesises_speech() -> None:
    engine = ESpeak.get()
    assert engine.sample_rate == 22050
    x = engine.synth("hello water", "en+m3", 50, 175)
    assert x.size > 0.3 * engine.sample_rate and 0.05 < np.abs(x).max() <= 1.0
    # eSpeak NG adds a little random variation, so the same settings give nearly the same length
    # (the cache keeps one generation); a higher rate gives a clearly shorter utterance
    again = engine.synth("hello water", "en+m3", 50, 175)
    assert abs(again.size - x.size) < 0.05 * x.size
    assert engine.synth("hello water", "en+m3", 50, 350).size < 0.75 * x.size
    with pytest.raises(ValueError, match="no voice"):
        engine.synth("hi", "xx+nonexistent", 50, 175)


def test_mix_at_snr_hand_worked() -> None:
    rng = np.random.default_rng(0)
    fg = np.zeros(1000, dtype=np.float32)
    fg[100:300] = 2.0  # power 4 over 200 active samples
    noise = rng.standard_normal(1000).astype(np.float32)
    for snr in (-10.0, 0.0, 7.0):
        mixed = mix_at_snr(fg, noise, snr, active=200)
        scaled_noise = mixed - fg
        assert 10 * np.log10(4.0 / np.mean(scaled_noise.astype(np.float64) ** 2)) == pytest.approx(snr, abs=1e-4)


def test_coloured_noise_slopes() -> None:
    rng = np.random.default_rng(1)
    n = 1 << 15
    f = np.fft.rfftfreq(n)[1:]
    for colour, beta in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        x = coloured_noise(rng, n, colour)
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)
        power = np.abs(np.fft.rfft(x))[1:] ** 2
        slope = np.polyfit(np.log(f), np.log(power), 1)[0]  # least-squares slope of log power vs log f
        assert slope == pytest.approx(-beta, abs=0.1)


def test_dataset_format_groups_and_cache(tmp_path) -> None:
    manifest = ensure_audio_dataset(tmp_path, TINY, progress=False)
    frame = pd.read_parquet(manifest)
    audio = np.load(manifest.parent / AUDIO_NAME, mmap_mode="r")
    assert len(frame) == 4 * 3 + 7 * 2 == audio.shape[0] and audio.shape[1] == 16000
    for col in ("sample_id", "split", "label", "group", "snr_db", "duration", "num_samples"):
        assert col in frame.columns, col
    assert set(frame.loc[frame.label == 1, "group"]) == {f"spk_{k:03d}" for k in range(4)}
    assert frame.loc[frame.label == 0, "kind"].nunique() == 7  # every source kind once
    # groups never cross train/test, and both splits hold both labels
    assert not set(frame.group[frame.split == "train"]) & set(frame.group[frame.split == "test"])
    assert frame.groupby("split").label.nunique().min() == 2
    # silence has no SNR; every other clip has one of the configured SNRs
    assert frame.snr_db[frame.kind == "silence"].isna().all()
    assert frame.snr_db[frame.kind != "silence"].isin([-10, -5, 0, 5, 10, 20]).all()
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    # cached: the second call generates nothing and returns the same directory
    mtime = (manifest.parent / AUDIO_NAME).stat().st_mtime_ns
    assert ensure_audio_dataset(tmp_path, TINY, progress=False) == manifest
    assert (manifest.parent / AUDIO_NAME).stat().st_mtime_ns == mtime
    # lists and tuples hash alike; a changed setting hashes differently
    from datamodules.audio.simulate import as_config

    assert config_hash(as_config(TINY)) == config_hash(as_config({**TINY, "snr_db": [-10, -5, 0, 5, 10, 20]}))
    assert config_hash(as_config(TINY)) != config_hash(as_config({**TINY, "seed": 7}))


def test_the_cache_is_built_by_the_shared_build_once_under_its_lock(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    import datamodules.audio.simulate as sim
    import rigor.cache

    calls, locks = [], []
    real_build_once, real_lock = sim.build_once, rigor.cache.file_lock
    monkeypatch.setattr(sim, "build_once", lambda path, build, **kw: calls.append(Path(path)) or real_build_once(path, build, **kw))
    monkeypatch.setattr(rigor.cache, "file_lock", lambda path: locks.append(Path(path)) or real_lock(path))
    manifest = ensure_audio_dataset(tmp_path, TINY, progress=False)
    out = manifest.parent
    assert calls == [out] and out == sim.audio_dataset_dir(tmp_path, TINY) and (out / "COMPLETE").is_file()
    assert locks == [tmp_path / f".{out.name}.lock"]  # parallel jobs wait for one build
    assert ensure_audio_dataset(tmp_path, TINY, progress=False) == manifest
    assert len(calls) == 2 and len(locks) == 1  # a finished data set is returned without the lock
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_the_default_hash_names_the_existing_cache() -> None:
    from datamodules.audio.simulate import AudioSimConfig, as_config

    # the cache directory of the default data set (conf/data/audio.yaml): a change regenerates every cache
    assert config_hash(AudioSimConfig()) == config_hash(as_config(None)) == "363c3f3f04b1"


def test_bad_settings_fail_naming_the_key() -> None:
    from datamodules.audio.simulate import as_config

    with pytest.raises(ValueError, match="unknown key"):
        as_config({"n_speakerz": 3})
    with pytest.raises(ValueError, match="data.simulation.pitch"):
        as_config({"pitch": [80, 20]})
    # YAML reads an unquoted yes as true: refused, naming the field, instead of synthesising "True"
    with pytest.raises(ValueError, match="data.simulation.words.*quote"):
        as_config({"words": [True, "no"]})


def test_real_clips_go_through_the_same_format(tmp_path) -> None:
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    rows = []
    for i, (label, group) in enumerate([("SPEECH", "alice"), ("NONSPEECH", "fan"), ("SPEECH", "bob")]):
        x = (rng.standard_normal(8000 + 4000 * i) * 3000).astype(np.int16)
        wavfile.write(tmp_path / f"c{i}.wav", 8000, x)
        rows.append({"audio_path": f"c{i}.wav", "label": label, "group": group})
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    manifest = import_audio_clips(tmp_path / "meta.csv", tmp_path / "out", progress=False)
    frame = pd.read_parquet(manifest)
    audio = np.load(manifest.parent / AUDIO_NAME)
    assert list(frame.label) == [1, 0, 1] and list(frame.num_samples) == [16000, 24000, 32000]
    assert audio.shape == (3, 32000) and np.all(audio[0, 16000:] == 0)
    pd.DataFrame(rows[:1]).drop(columns="group").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['group'\]"):
        import_audio_clips(tmp_path / "bad.csv", tmp_path / "out2", progress=False)
    with pytest.raises(ValueError, match="column 'label' has 'MAYBE'"):
        normalise_labels(["SPEECH", "MAYBE"], "x.csv")


def test_the_stress_set_keeps_the_old_default_hash_and_the_new_default_is_realistic() -> None:
    import yaml

    from datamodules.audio.simulate import REALISTIC_KINDS, as_config
    from tests.conftest import ROOT

    def sim(name: str) -> dict:
        cfg = yaml.safe_load((ROOT / "conf" / "data" / f"{name}.yaml").read_text())["simulation"]
        return {**cfg, "test_fraction": 0.2}  # ${data.test_fraction}

    # conf/data/audio_stress.yaml is the pre-issue-23 default: same cache, same recorded results
    assert config_hash(as_config(sim("audio_stress"))) == "363c3f3f04b1"
    new = as_config(sim("audio"))
    assert new.source_kinds == REALISTIC_KINDS and min(new.speech_snr_db) >= 0
    assert round(0.2 * new.n_sources) >= 30  # group_split holds out round(fraction x groups) sources


def test_realistic_kinds_and_speech_snrs(tmp_path) -> None:
    from datamodules.audio.simulate import REALISTIC_KINDS

    cfg = {**TINY, "n_sources": 9, "source_kinds": list(REALISTIC_KINDS), "snr_db": [0, 20], "speech_snr_db": [30]}
    frame = pd.read_parquet(ensure_audio_dataset(tmp_path, cfg, progress=False))
    audio = np.load(tmp_path / next(p.name for p in tmp_path.iterdir() if p.is_dir()) / AUDIO_NAME)
    assert set(frame.loc[frame.label == 0, "kind"]) == set(REALISTIC_KINDS)
    assert (frame.snr_db[frame.label == 1] == 30).all() and frame.snr_db[frame.label == 0].isin([0, 20]).all()
    assert np.isfinite(audio).all() and (np.sqrt((audio.astype(np.float64) ** 2).mean(axis=1)) > 1e-3).all()
    with pytest.raises(ValueError, match="data.simulation.source_kinds"):
        from datamodules.audio.simulate import as_config

        as_config({"source_kinds": ["music", "violin"]})
