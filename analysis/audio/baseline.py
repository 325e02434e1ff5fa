"""How hard is a SPEECH / NONSPEECH set? A simple acoustic baseline (issue 23).

Logistic regression on modulation-spectrum features, trained on the train + dev clips and scored on
test, with the same group splits as the model (the datamodule's manifest). Speech carries its energy
envelope at 2-8 Hz (syllables) across the speech bands; a baseline that separates the classes well says
the labels are learnable from the audio, one near chance says the set is built against its features.

    python -m analysis.audio.baseline                      # the default set (conf/data/audio.yaml)
    python -m analysis.audio.baseline data=audio_stress    # any Hydra override of the train config
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

MOD_EDGES_HZ = (0.5, 2.0, 4.0, 8.0, 16.0, 32.0)  # modulation bins; 2-8 Hz is the syllable rate


def modulation_features(clip: np.ndarray, sample_rate: int = 16000, n_bands: int = 16, n_fft: int = 512,
                        hop: int = 160, mod_edges: Sequence[float] = MOD_EDGES_HZ) -> np.ndarray:
    """Level-invariant modulation-spectrum features of one clip.

    Args:
        clip: (n,) waveform.
        sample_rate: Its rate in Hz.
        n_bands: Log-spaced frequency bands from 100 Hz to Nyquist.
        n_fft, hop: STFT size and hop (160 at 16 kHz: 100 envelope frames a second).
        mod_edges: Modulation-frequency bin edges in Hz.

    Returns:
        (n_bands * (len(mod_edges) + 1),) float64: each band's mean log energy minus the clip's mean (the
        spectral shape), its log-envelope std, and the log power of its log-envelope in each modulation bin.
    """
    x = np.asarray(clip, dtype=np.float64)
    if x.size < n_fft + hop:
        x = np.pad(x, (0, n_fft + hop - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2                      # (T, F)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    edges = np.geomspace(100.0, sample_rate / 2, n_bands + 1)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    env = np.log(bands + 1e-10)                                            # (T, n_bands)
    shape = env.mean(axis=0) - env.mean()                                  # loudness cancels
    centred = env - env.mean(axis=0)
    spec = np.abs(np.fft.rfft(centred, axis=0)) ** 2 / env.shape[0]         # (M, n_bands)
    mod_f = np.fft.rfftfreq(env.shape[0], hop / sample_rate)
    mods = [np.log(spec[(mod_f >= lo) & (mod_f < hi)].mean(axis=0) + 1e-6) if np.any((mod_f >= lo) & (mod_f < hi))
            else np.full(n_bands, np.log(1e-6)) for lo, hi in zip(mod_edges[:-1], mod_edges[1:])]
    return np.concatenate([shape, centred.std(axis=0), *mods])


def baseline_accuracy(audio: np.ndarray, frame: pd.DataFrame, sample_rate: int = 16000, C: float = 1.0,
                      seed: int = 0) -> dict[str, Any]:
    """Fit the baseline on the train and dev clips, score it on test.

    Args:
        audio: (N, n) waveforms (rows addressed by ``frame['row']``).
        frame: The datamodule's manifest: ``row``, ``split`` (train/val/test), ``label``, optional
            ``num_samples``, ``kind``.
        sample_rate: Clip rate in Hz.
        C: Inverse L2 strength of the logistic regression.
        seed: Its random_state.

    Returns:
        ``accuracy, balanced_accuracy, speech_accuracy, nonspeech_accuracy, auroc`` on test, the split sizes,
        and ``nonspeech_accuracy_by_kind`` where the manifest has ``kind``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = frame["num_samples"].to_numpy() if "num_samples" in frame.columns else np.full(len(frame), audio.shape[1])
    feats = np.stack([modulation_features(np.asarray(audio[r, : int(k)]), sample_rate) for r, k in zip(frame["row"], n)])
    y = frame["label"].to_numpy().astype(int)
    fit = frame["split"].isin(["train", "val"]).to_numpy()
    test = (frame["split"] == "test").to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))
    model.fit(feats[fit], y[fit])
    score = model.decision_function(feats[test])
    pred, yt = (score > 0).astype(int), y[test]
    speech, nonspeech = float(np.mean(pred[yt == 1] == 1)), float(np.mean(pred[yt == 0] == 0))
    out: dict[str, Any] = {"accuracy": float(np.mean(pred == yt)), "balanced_accuracy": (speech + nonspeech) / 2,
                           "speech_accuracy": speech, "nonspeech_accuracy": nonspeech,
                           "auroc": float(roc_auc_score(yt, score)), "n_fit": int(fit.sum()), "n_test": int(test.sum())}
    if "kind" in frame.columns:
        kinds = frame.loc[test, "kind"].to_numpy()
        out["nonspeech_accuracy_by_kind"] = {str(k): float(np.mean(pred[(yt == 0) & (kinds == k)] == 0))
                                             for k in sorted(set(kinds[yt == 0]))}
    return out


def main(overrides: Sequence[str]) -> dict[str, Any]:
    """The baseline on the audio data that ``train.py experiment=audio_lora_attn <overrides>`` would use."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from datamodules.audio.simulate import AUDIO_NAME
    from rigor.config import register_resolvers

    register_resolvers()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=audio_lora_attn", *overrides])
    dm = instantiate(cfg.data)
    frame = dm.manifest()
    audio = np.load(dm.resolved_manifest().parent / AUDIO_NAME, mmap_mode="r")
    return baseline_accuracy(audio, frame, int(cfg.model.net.tiny.sample_rate))


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
