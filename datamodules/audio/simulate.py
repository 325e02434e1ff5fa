"""Embedded SPEECH / NONSPEECH clips: eSpeak NG speech in noise and non-speech sources, at 16 kHz.

Nothing is downloaded. Speech comes from the eSpeak NG library and voice data that ship inside the
``espeakng-loader`` wheel, called through its C API with ctypes (about a millisecond an utterance).
A speaker (one group) is a voice variant x pitch x rate; each of its clips says a few words from the
word list. Non-speech sources (one group each) cycle through ``source_kinds``, each with its own fixed
parameters: the stress set (conf/data/audio_stress.yaml, the v1 default) has noise colours, tones,
chords, click trains and silence; the realistic kinds (``REALISTIC_KINDS``, conf/data/audio.yaml) are
music-like note sequences with harmonics, rain, wind, engine, fan, bird-like chirps, bark-like calls,
impacts and noise as one kind among nine. Every clip's foreground (speech or source) is mixed into a
background noise at an SNR drawn from ``snr_db`` (``speech_snr_db`` for speech when given), and the
mixture is scaled to a random level, so loudness tells nothing about the label. eSpeak NG itself adds a little random
variation (two calls with the same settings differ by a few milliseconds), so clips are not
bit-identical between two generations; the cache keeps one generation per settings hash.

Output (``simulate_audio_dataset``), the same format as real clips (``import_audio_clips``):
``manifest.parquet`` with one row per clip (``sample_id, split, label, label_name, group, snr_db,
duration, num_samples, audio_path, kind``) and ``audio.npy`` (N, max_samples) float32, zero-padded,
read memory-mapped. ``split`` is train/test by whole groups (analysis.group_splits); the datamodule
carves dev out of train. ``ensure_audio_dataset`` caches it under ``cache_root/audio_{hash}``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import resample_poly
from tqdm.auto import tqdm

from analysis.group_splits import group_split
from datamodules.simulation import SimConfig
from rigor.cache import build_once, content_hash

SIM_VERSION = 1
MANIFEST_NAME = "manifest.parquet"
AUDIO_NAME = "audio.npy"
COMPLETE_NAME = "COMPLETE"
LABEL_NAMES = ("NONSPEECH", "SPEECH")  # label 1 = SPEECH
SOURCE_KINDS = ("white", "pink", "brown", "tone", "chord", "clicks", "silence")  # v1: the stress set
# non-speech as a real corpus has it: music, environmental and mechanical textures, animal calls, impacts;
# noise is one kind among nine
REALISTIC_KINDS = ("music", "rain", "wind", "engine", "fan", "birdsong", "bark", "impacts", "noise")
ALL_KINDS = SOURCE_KINDS + REALISTIC_KINDS


@dataclasses.dataclass(frozen=True)
class AudioSimConfig(SimConfig):
    """Settings of the embedded audio simulation (conf/data/audio*.yaml, ``simulation:``).

    Values are coerced to the declared types (SimConfig): YAML lists become tuples, ints given for floats
    become floats, so equal configs hash equally; a bad value fails naming ``data.simulation.<field>``.
    """

    n_speakers: int = 56
    clips_per_speaker: int = 10
    n_sources: int = 28
    clips_per_source: int = 16
    test_fraction: float = 0.2          # of each class's groups
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    snr_db: tuple[float, ...] = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
    level_dbfs: tuple[float, float] = (-35.0, -15.0)   # RMS of the final clip, uniform
    voices: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                               "klatt", "klatt2", "klatt3", "klatt4", "croak", "whisper")
    language: str = "en"
    pitch: tuple[int, int] = (25, 80)   # eSpeak pitch 0-100, one value per speaker
    rate: tuple[int, int] = (120, 220)  # words per minute, one value per speaker
    words: tuple[str, ...] = ("yes", "no", "stop", "go", "left", "right", "up", "down", "one", "two", "three",
                              "four", "five", "seven", "hello", "okay", "water", "music", "open", "close")
    words_per_clip: tuple[int, int] = (2, 4)
    seed: int = 1234
    source_kinds: tuple[str, ...] = SOURCE_KINDS   # cycled over the sources
    speech_snr_db: tuple[float, ...] = ()          # SNRs of speech clips; empty = snr_db

    hash_version = ("version", SIM_VERSION)  # a class attribute, not a field

    def content_hash(self) -> str:
        """As SimConfig's, but fields added after v1 enter only when set, so the v1 caches keep their names."""
        key, version = self.hash_version
        fields = {k: v for k, v in self.to_dict().items() if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]}
        return content_hash({key: version, **fields}, length=12)

    def _validate(self) -> None:
        bad = self._bad
        for name in ("n_speakers", "n_sources", "clips_per_speaker", "clips_per_source", "sample_rate"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "expected an integer >= 1")
        if self.clip_seconds <= 0:
            raise bad("clip_seconds", "expected seconds > 0")
        if not self.snr_db:
            raise bad("snr_db", "expected a non-empty list of SNRs in dB")
        if not self.voices:
            raise bad("voices", "expected eSpeak NG voice variants")
        if not self.words:
            raise bad("words", "expected a non-empty word list")
        for name in ("pitch", "rate", "level_dbfs", "words_per_clip"):
            if len(getattr(self, name)) != 2 or getattr(self, name)[0] > getattr(self, name)[1]:
                raise bad(name, "expected [low, high]")
        if not 0.0 <= self.test_fraction < 1.0:
            raise bad("test_fraction", "expected a fraction in [0, 1)")
        unknown = [k for k in self.source_kinds if k not in ALL_KINDS]
        if not self.source_kinds or unknown:
            raise bad("source_kinds", f"unknown kind(s) {unknown}; expected some of {list(ALL_KINDS)}")

    @property
    def n_clips(self) -> int:
        return self.n_speakers * self.clips_per_speaker + self.n_sources * self.clips_per_source


# fields added after v1 and their defaults (which reproduce v1's data and hash)
_LATER_DEFAULTS: dict[str, Any] = {"source_kinds": SOURCE_KINDS, "speech_snr_db": ()}


def as_config(cfg: AudioSimConfig | Mapping[str, Any] | None) -> AudioSimConfig:
    """An AudioSimConfig from a mapping, itself or None (unknown keys fail, naming them)."""
    return AudioSimConfig.from_mapping(cfg)


def config_hash(cfg: AudioSimConfig) -> str:
    """Short, stable hash of the config and the simulator version."""
    return cfg.content_hash()


# --- eSpeak NG through ctypes ----------------------------------------------------------------------

class ESpeak:
    """Synchronous eSpeak NG synthesis through the C API of the library in the espeakng-loader wheel.

    One instance per process (the library keeps global state).
    """

    _instance: ESpeak | None = None
    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    _AUDIO_OUTPUT_SYNCHRONOUS = 2
    _POS_CHARACTER = 1
    _RATE, _PITCH = 1, 3  # espeak_PARAMETER

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - a missing dependency
            raise ImportError("the audio simulation needs the espeakng-loader wheel: pip install espeakng-loader") from err
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = int(self.lib.espeak_Initialize(self._AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                                          espeakng_loader.get_data_path().encode(), 0))
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {self.sample_rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # keep a reference: the library calls it later
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> ESpeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav: Any, n: int, events: Any) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: str, pitch: int, rate: int) -> np.ndarray:
        """Float waveform in [-1, 1] at ``self.sample_rate`` (22,050 Hz)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"data.simulation.voices: eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(self._RATE, int(rate), 0)
        self.lib.espeak_SetParameter(self._PITCH, int(pitch), 0)
        self._chunks = []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, self._POS_CHARACTER, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


# --- signals ---------------------------------------------------------------------------------------

def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS noise with a 1/f^beta power spectrum: white (0), pink (1), brown (2)."""
    beta = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    x = np.fft.irfft(spec / f ** (beta / 2), n)
    return (x / max(_rms(x), 1e-12)).astype(np.float32)


def _source_params(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    """Fixed parameters of one non-speech source (one group)."""
    if kind == "tone":
        return {"freqs": [float(rng.uniform(150, 3000))], "vibrato": float(rng.uniform(0, 8))}
    if kind == "chord":
        root = float(rng.uniform(110, 660))
        return {"freqs": [root, root * 2 ** (4 / 12), root * 2 ** (7 / 12)], "vibrato": float(rng.uniform(0, 4))}
    if kind == "clicks":
        return {"rate_hz": float(rng.uniform(2, 25)), "decay_ms": float(rng.uniform(1, 10))}
    if kind in ("white", "pink", "brown"):
        return {"band_lo": float(rng.uniform(0, 2000)), "band_hi": float(rng.uniform(3000, 8000))}
    if kind == "noise":  # one colour and band per source
        return {"colour": str(rng.choice(["white", "pink", "brown"])), "band_lo": float(rng.uniform(0, 1000)),
                "band_hi": float(rng.uniform(2000, 8000))}
    if kind == "music":  # notes of a pentatonic scale, harmonic timbre, plucked or sustained
        return {"root": float(rng.uniform(80, 500)), "notes_per_s": float(rng.uniform(1.5, 8)),
                "n_harmonics": int(rng.integers(2, 9)), "rolloff": float(rng.uniform(0.3, 0.85)),
                "decay_s": float(rng.uniform(0.05, 1.0)), "voices": int(rng.integers(1, 3))}
    if kind == "rain":
        return {"drops_per_s": float(rng.uniform(100, 2000)), "drop_ms": float(rng.uniform(0.5, 4)),
                "highpass": float(rng.uniform(300, 2500)), "bed": float(rng.uniform(0.1, 0.6))}
    if kind == "wind":
        return {"lowpass": float(rng.uniform(150, 1200)), "gust_hz": float(rng.uniform(0.2, 2.0)),
                "depth": float(rng.uniform(0.3, 0.9))}
    if kind == "engine":  # firing-rate harmonics, amplitude-modulated at the firing rate
        return {"f0": float(rng.uniform(20, 120)), "n_harmonics": int(rng.integers(8, 40)),
                "am": float(rng.uniform(0.1, 0.7)), "noise": float(rng.uniform(0.05, 0.5))}
    if kind == "fan":
        return {"blade_hz": float(rng.uniform(40, 400)), "lowpass": float(rng.uniform(800, 6000)),
                "tone": float(rng.uniform(0.1, 1.0))}
    if kind == "birdsong":  # FM chirps in 1.5-8 kHz
        return {"f_lo": float(rng.uniform(1500, 4000)), "f_hi": float(rng.uniform(4000, 8000)),
                "chirps_per_s": float(rng.uniform(2, 15)), "chirp_ms": float(rng.uniform(20, 150)),
                "up": bool(rng.random() < 0.5)}
    if kind == "bark":  # harmonic bursts with a noisy onset
        return {"f0": float(rng.uniform(250, 900)), "calls_per_s": float(rng.uniform(0.7, 4)),
                "call_ms": float(rng.uniform(80, 300)), "noise": float(rng.uniform(0.1, 0.6))}
    if kind == "impacts":  # damped resonances at irregular times (knocks, steps, dishes)
        return {"rate_hz": float(rng.uniform(0.7, 8)), "modes": [float(v) for v in rng.uniform(150, 5000, 3)],
                "decay_ms": float(rng.uniform(5, 120))}
    return {}


def _band(x: np.ndarray, sr: int, lo: float = 0.0, hi: float | None = None, floor: float = 0.0) -> np.ndarray:
    """x with its spectrum outside [lo, hi] Hz scaled by floor (a brick-wall band-pass)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / sr)
    spec[(f < lo) | (f > (hi if hi is not None else sr))] *= floor
    return np.fft.irfft(spec, x.size)


def _events(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """Onset samples of a Poisson process of rate_hz over n samples (at least one)."""
    count = max(1, int(rng.poisson(rate_hz * n / sr)))
    return np.sort(rng.integers(0, n, count))


def _add_at(x: np.ndarray, event: np.ndarray, start: int) -> None:
    stop = min(x.size, start + event.size)
    x[start:stop] += event[: stop - start]


def _realistic_clip(rng: np.random.Generator, kind: str, p: Mapping[str, Any], n: int, sr: int) -> np.ndarray:
    """One event of a realistic non-speech kind (REALISTIC_KINDS), not yet normalised."""
    t = np.arange(n) / sr
    if kind == "noise":
        return _band(coloured_noise(rng, n, p["colour"]), sr, p["band_lo"], p["band_hi"], 0.1)
    if kind == "music":
        x = np.zeros(n)
        steps = np.array([0, 2, 4, 7, 9, 12, 14, 16])  # a pentatonic scale over two octaves
        note = max(1, int(sr / p["notes_per_s"]))
        for _ in range(p["voices"]):
            for start in range(0, n, note):
                f = p["root"] * 2 ** (rng.choice(steps) / 12)
                tt = np.arange(min(note, n - start)) / sr
                env = np.exp(-tt / p["decay_s"]) * np.minimum(1.0, tt / 0.005)
                tone = sum(p["rolloff"] ** (k - 1) * np.sin(2 * np.pi * k * f * tt) for k in range(1, p["n_harmonics"] + 1)
                           if k * f < sr / 2)
                x[start : start + tt.size] += env * tone
        return x
    if kind == "rain":
        x = np.zeros(n)
        width = max(2, int(sr * p["drop_ms"] / 1000))
        for s in _events(rng, n, sr, p["drops_per_s"]):
            _add_at(x, rng.standard_normal(width) * np.exp(-np.arange(width) / (width / 4)) * rng.uniform(0.2, 1.0), int(s))
        x = x / max(_rms(x), 1e-12) + p["bed"] * coloured_noise(rng, n, "pink")
        return _band(x, sr, p["highpass"], None, 0.05)
    if kind == "wind":
        gust = 1.0 + p["depth"] * np.sin(2 * np.pi * p["gust_hz"] * t + rng.uniform(0, 2 * np.pi))
        return gust * _band(coloured_noise(rng, n, "pink"), sr, 0.0, p["lowpass"], 0.02)
    if kind == "engine":
        phase = rng.uniform(0, 2 * np.pi, p["n_harmonics"])
        x = sum(np.sin(2 * np.pi * k * p["f0"] * t + phase[k - 1]) / k for k in range(1, p["n_harmonics"] + 1)
                if k * p["f0"] < sr / 2)
        x = x * (1.0 + p["am"] * np.sin(2 * np.pi * p["f0"] / 2 * t))
        return x / max(_rms(x), 1e-12) + p["noise"] * coloured_noise(rng, n, "brown")
    if kind == "fan":
        hum = sum(np.sin(2 * np.pi * k * p["blade_hz"] * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
        return _band(coloured_noise(rng, n, "white"), sr, 0.0, p["lowpass"], 0.05) + p["tone"] * hum
    if kind == "birdsong":
        x = np.zeros(n)
        m = max(8, int(sr * p["chirp_ms"] / 1000))
        tt = np.arange(m) / sr
        for s in _events(rng, n, sr, p["chirps_per_s"]):
            lo, hi = (p["f_lo"], p["f_hi"]) if p["up"] else (p["f_hi"], p["f_lo"])
            f = lo + (hi - lo) * tt / tt[-1] + rng.uniform(-200, 200)
            chirp = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(m)
            _add_at(x, chirp * rng.uniform(0.4, 1.0), int(s))
        return x
    if kind == "bark":
        x = np.zeros(n)
        m = max(8, int(sr * p["call_ms"] / 1000))
        tt = np.arange(m) / sr
        for s in _events(rng, n, sr, p["calls_per_s"]):
            f0 = p["f0"] * rng.uniform(0.85, 1.15) * (1 - 0.3 * tt / tt[-1])  # falling pitch
            phase = 2 * np.pi * np.cumsum(f0) / sr
            call = sum(np.sin(k * phase) / k for k in range(1, 12))
            env = np.exp(-tt / (tt[-1] / 3)) * np.minimum(1.0, tt / 0.003)
            _add_at(x, env * (call + p["noise"] * 3 * rng.standard_normal(m)), int(s))
        return x
    if kind == "impacts":
        x = np.zeros(n)
        m = int(sr * p["decay_ms"] * 6 / 1000) + 1
        tt = np.arange(m) / sr
        ring = sum(np.sin(2 * np.pi * f * tt) for f in p["modes"]) * np.exp(-tt / (p["decay_ms"] / 1000))
        for s in _events(rng, n, sr, p["rate_hz"]):
            hit = ring * rng.uniform(0.3, 1.0)
            hit[: min(m, 40)] += rng.standard_normal(min(m, 40)) * np.linspace(1, 0, min(m, 40))  # the click of the hit
            _add_at(x, hit, int(s))
        return x
    raise ValueError(f"unknown non-speech source kind {kind!r}; expected one of {ALL_KINDS}")


def _source_clip(rng: np.random.Generator, kind: str, params: Mapping[str, Any], n: int, sr: int) -> np.ndarray:
    """One event of a non-speech source, unit RMS (all zeros for silence)."""
    t = np.arange(n) / sr
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind in ("white", "pink", "brown"):
        x = coloured_noise(rng, n, kind)
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1 / sr)
        spec[(f < params["band_lo"]) | (f > params["band_hi"])] *= 0.1
        x = np.fft.irfft(spec, n)
    elif kind in ("tone", "chord"):
        x = np.zeros(n)
        for freq in params["freqs"]:
            wobble = params["vibrato"] * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
            x += np.sin(2 * np.pi * (freq * t + np.cumsum(wobble) / sr) + rng.uniform(0, 2 * np.pi))
        x *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fade in/out
    elif kind == "clicks":
        x = np.zeros(n)
        period = max(1, int(sr / params["rate_hz"]))
        kernel = np.exp(-np.arange(int(sr * params["decay_ms"] * 5 / 1000) + 1) / (sr * params["decay_ms"] / 1000))
        x[int(rng.integers(0, period)) :: period] = 1.0
        x = np.convolve(x, kernel * rng.standard_normal(kernel.size), mode="same")
    else:
        x = _realistic_clip(rng, kind, params, n, sr)
    return (x / max(_rms(x), 1e-12)).astype(np.float32)


def _place(event: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The event at a random offset in an n-sample clip (cropped around its middle if too long)."""
    out = np.zeros(n, dtype=np.float32)
    if event.size >= n:
        start = (event.size - n) // 2
        out[:] = event[start : start + n]
        return out, n
    offset = int(rng.integers(0, n - event.size + 1))
    out[offset : offset + event.size] = event
    return out, event.size


def mix_at_snr(foreground: np.ndarray, noise: np.ndarray, snr_db: float, active: int) -> np.ndarray:
    """foreground + noise scaled so that the foreground's power over its active samples / noise power = SNR.

    Args:
        foreground: (n,) event placed in the clip (zeros outside it).
        noise: (n,) background noise.
        snr_db: Signal-to-noise ratio in dB.
        active: Number of samples the event occupies (its power is measured over these).
    """
    p_sig = float(np.sum(np.square(foreground, dtype=np.float64))) / max(active, 1)
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_sig == 0.0 or p_noise == 0.0:
        return (foreground + noise).astype(np.float32)
    scale = np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (foreground + scale * noise).astype(np.float32)


def _groups(cfg: AudioSimConfig) -> list[dict[str, Any]]:
    """Every group (speaker or source) with its fixed parameters, drawn from the config seed."""
    rng = np.random.default_rng([cfg.seed, 0])
    out = []
    for k in range(cfg.n_speakers):
        out.append({
            "group": f"spk_{k:03d}", "label": 1, "kind": "speech",
            "voice": f"{cfg.language}+{cfg.voices[k % len(cfg.voices)]}",
            "pitch": int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
            "rate": int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)),
            "n": cfg.clips_per_speaker,
        })
    for k in range(cfg.n_sources):
        kind = cfg.source_kinds[k % len(cfg.source_kinds)]
        out.append({"group": f"src_{kind}_{k:03d}", "label": 0, "kind": kind, "params": _source_params(rng, kind),
                    "n": cfg.clips_per_source})
    return out


def simulate_audio_dataset(out_dir: str | Path, cfg: AudioSimConfig | Mapping[str, Any] | None = None,
                           progress: bool = True) -> Path:
    """Generate the clips and write ``manifest.parquet`` and ``audio.npy`` into out_dir.

    Each clip draws its randomness from (config seed, clip number), so a clip never depends on the
    others.

    Returns:
        The manifest path.
    """
    cfg = as_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr, n = cfg.sample_rate, int(round(cfg.clip_seconds * cfg.sample_rate))
    engine = ESpeak.get()
    groups = _groups(cfg)
    audio = np.lib.format.open_memmap(out_dir / AUDIO_NAME, mode="w+", dtype=np.float32, shape=(cfg.n_clips, n))
    rows = []
    bar = tqdm(total=cfg.n_clips, desc="simulate audio clips", unit="clip", disable=not progress)
    i = 0
    for g in groups:
        for _ in range(g["n"]):
            rng = np.random.default_rng([cfg.seed, 1, i])
            snr = float(rng.choice(cfg.speech_snr_db if g["label"] == 1 and cfg.speech_snr_db else cfg.snr_db))
            if g["label"] == 1:
                k = int(rng.integers(cfg.words_per_clip[0], cfg.words_per_clip[1] + 1))
                text = " ".join(rng.choice(cfg.words, size=k))
                speech = engine.synth(text, g["voice"], g["pitch"], g["rate"])
                speech = resample_poly(speech, sr, engine.sample_rate).astype(np.float32)
                nz = np.flatnonzero(np.abs(speech) > 1e-4)  # trim eSpeak's leading/trailing silence
                speech = speech[nz[0] : nz[-1] + 1] if nz.size else speech
                event = speech / max(_rms(speech), 1e-12)
            else:
                length = int(rng.integers(n // 4, n + 1))
                event = _source_clip(rng, g["kind"], g["params"], length, sr)
            fg, active = _place(event, n, rng)
            background = coloured_noise(rng, n, str(rng.choice(["white", "pink", "brown"])))
            if g["kind"] == "silence":
                clip, snr = 0.05 * background, float("nan")  # a quiet room: no foreground, no SNR
            else:
                clip = mix_at_snr(fg, background, snr, active)
            level = 10 ** (rng.uniform(*cfg.level_dbfs) / 20)
            clip = clip * (level / max(_rms(clip), 1e-12))
            audio[i] = np.clip(clip, -1.0, 1.0)
            rows.append({"sample_id": f"clip_{i:05d}", "label": g["label"], "label_name": LABEL_NAMES[g["label"]],
                         "group": g["group"], "kind": g["kind"], "snr_db": snr, "duration": active / sr,
                         "num_samples": n, "audio_path": f"{AUDIO_NAME}#{i}"})
            i += 1
            bar.update(1)
    bar.close()
    audio.flush()
    del audio
    frame = pd.DataFrame(rows)
    test = group_split(frame["group"].to_numpy(), frame["label"].to_numpy(), cfg.test_fraction, cfg.seed)
    frame.insert(1, "split", np.where(test, "test", "train"))
    manifest = out_dir / MANIFEST_NAME
    frame.to_parquet(manifest, index=False)
    (out_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    return manifest


def audio_dataset_dir(cache_root: str | Path, cfg: AudioSimConfig | Mapping[str, Any] | None) -> Path:
    """The cache directory ``cache_root / audio_{hash}`` of a config."""
    return Path(cache_root) / f"audio_{config_hash(as_config(cfg))}"


def ensure_audio_dataset(cache_root: str | Path, cfg: AudioSimConfig | Mapping[str, Any] | None = None,
                         progress: bool = True) -> Path:
    """The cached simulation of cfg, generated once by rigor.cache.build_once.

    Under a lock, into a temporary directory that gets ``COMPLETE`` last and is then renamed, so parallel
    jobs generate it once and none reads a half-written one.

    Returns:
        Path of ``manifest.parquet`` (``audio.npy`` lies beside it).
    """
    cfg = as_config(cfg)
    final = build_once(audio_dataset_dir(cache_root, cfg), lambda tmp: simulate_audio_dataset(tmp, cfg, progress),
                       marker=COMPLETE_NAME, marker_text=f"audio simulation v{SIM_VERSION}, {config_hash(cfg)}\n")
    return final / MANIFEST_NAME


# --- real clips ------------------------------------------------------------------------------------

REQUIRED_COLUMNS = ("audio_path", "label", "group")


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    from scipy.io import wavfile

    sr, x = wavfile.read(path)
    x = np.asarray(x)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    return x.astype(np.float32), int(sr)


def import_audio_clips(metadata: str | Path, out_dir: str | Path, sample_rate: int = 16000,
                       max_seconds: float | None = None, progress: bool = True) -> Path:
    """Turn a metadata table of real .wav clips into the manifest + ``audio.npy`` format.

    The table (CSV or parquet) needs ``audio_path`` (absolute or relative to the table), ``label``
    (SPEECH/NONSPEECH or 1/0) and ``group`` (speaker or source); ``snr_db``, ``duration`` and
    ``split`` (train/test) are kept when present. Clips are resampled to sample_rate and zero-padded
    to the longest (or cut at max_seconds).

    Returns:
        The manifest path.
    """
    metadata = Path(metadata)
    frame = pd.read_parquet(metadata) if metadata.suffix == ".parquet" else pd.read_csv(metadata)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{metadata}: missing column(s) {missing}; expected at least {list(REQUIRED_COLUMNS)}")
    frame = frame.copy()
    frame["label"] = normalise_labels(frame["label"], str(metadata))
    clips = []
    for path in tqdm(frame["audio_path"], desc="read clips", unit="clip", disable=not progress):
        p = Path(path) if Path(path).is_absolute() else metadata.parent / path
        if not p.exists():
            raise FileNotFoundError(f"{metadata}: audio_path {path!r} does not exist")
        x, sr = _read_wav(p)
        if sr != sample_rate:
            from math import gcd

            d = gcd(sr, sample_rate)
            x = resample_poly(x, sample_rate // d, sr // d).astype(np.float32)
        if max_seconds is not None:
            x = x[: int(max_seconds * sample_rate)]
        clips.append(x)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(c.size for c in clips)
    audio = np.lib.format.open_memmap(out_dir / AUDIO_NAME, mode="w+", dtype=np.float32, shape=(len(clips), width))
    for i, c in enumerate(clips):
        audio[i, : c.size] = c
    audio.flush()
    frame["num_samples"] = [c.size for c in clips]
    frame["sample_rate"] = int(sample_rate)  # the datamodule refuses (or resamples) clips not at the processor's rate
    if "duration" not in frame.columns:
        frame["duration"] = frame["num_samples"] / sample_rate
    if "snr_db" not in frame.columns:
        frame["snr_db"] = np.nan
    if "sample_id" not in frame.columns:
        frame.insert(0, "sample_id", [Path(str(p)).stem for p in frame["audio_path"]])
    frame["label_name"] = [LABEL_NAMES[v] for v in frame["label"]]
    manifest = out_dir / MANIFEST_NAME
    frame.to_parquet(manifest, index=False)
    return manifest


def normalise_labels(values: Sequence[Any], where: str) -> np.ndarray:
    """0/1 labels from SPEECH/NONSPEECH strings or 0/1 numbers; anything else fails naming it."""
    out = []
    for v in values:
        s = str(v).strip().upper()
        if s in ("SPEECH", "1", "1.0", "TRUE"):
            out.append(1)
        elif s in ("NONSPEECH", "NON-SPEECH", "0", "0.0", "FALSE"):
            out.append(0)
        else:
            raise ValueError(f"{where}: column 'label' has {v!r}; expected SPEECH/NONSPEECH or 1/0")
    return np.asarray(out, dtype=np.int64)
