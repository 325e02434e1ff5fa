"""SPEECH / NONSPEECH clips for Qwen2-Audio: group splits, a dev split carved from train, a leakage audit.

The data is a manifest (one row per clip: ``sample_id``, ``label``, ``group`` = speaker or source,
``snr_db``, ``duration``, ``num_samples``; optionally ``split`` = train/test) with ``audio.npy`` beside
it, read memory-mapped. ``manifest_path: null`` uses the embedded eSpeak NG simulation
(datamodules/audio/simulate.py), generated once and cached; real clips are turned into the same
format by ``datamodules.audio.simulate.import_audio_clips`` and read by the same code.

Splits are by whole groups: train/test from the manifest's ``split`` column (or drawn by groups when it
has none, or when ``resplit_seed`` is set), then ``dev_fraction`` of the training groups (per label
class) become the dev split, which Rigor calls ``val``: it picks the checkpoint and fits the
temperature. The leakage audit (analysis.group_splits.audit_leakage) runs in every ``setup`` and
refuses, naming the groups, any two splits that share a group.

Batches are dicts: ``input_features`` (B, n_mels, frames) Whisper log-mel features and
``feature_attention_mask`` from the model's processor, ``input_ids`` and ``attention_mask`` of the
prompt (right-padded; the audio placeholder expanded to the clip's number of audio tokens),
``target`` (1 = SPEECH) and ``index``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from analysis.group_splits import audit_leakage, group_split
from datamodules.base import BaseDataModule, check_columns
from datamodules.audio.simulate import AUDIO_NAME, LABEL_NAMES, ensure_audio_dataset, normalise_labels

log = logging.getLogger(__name__)

REQUIRED = ("sample_id", "label", "group", "num_samples")
INPUT_KEYS = ("input_features", "feature_attention_mask", "input_ids", "attention_mask")


def normalise_groups(values: pd.Series, source: str) -> pd.Series:
    """Group ids without case or white space, so that ``Spk 1`` and ``spk1`` are one group in the audit and the splits.

    A group id that differs only by case or spaces is the same speaker or source written twice; kept apart,
    its clips could land in train and test and pass the leakage audit. Merged ids are logged.
    """
    raw = values.astype(str)
    norm = raw.map(lambda g: "".join(g.split()).casefold())
    merged = raw.groupby(norm).unique()
    merged = merged[merged.map(len) > 1]
    if len(merged):
        log.warning("%s: %d group id(s) differ only by case or spaces and are one group each: %s", source, len(merged),
                    "; ".join(" = ".join(map(repr, v)) for v in merged.head(5)))
    return norm


def check_lengths(frame: pd.DataFrame, source: str) -> None:
    """Refuse zero-length (or negative, missing) clips, naming them: a clip of silence padding is no sample."""
    n = pd.to_numeric(frame["num_samples"], errors="coerce")
    bad = frame.loc[~(n > 0)]
    if len(bad):
        ids = ", ".join(f"{s} ({v})" for s, v in zip(bad["sample_id"].astype(str).head(10), frame.loc[bad.index, "num_samples"]))
        raise ValueError(f"{source}: {len(bad)} clip(s) with num_samples <= 0 or missing: {ids}"
                         f"{' ...' if len(bad) > 10 else ''}; drop them from the manifest")


def _resampled_length(n: int, rate: int, target: int) -> int:
    """Length of ``n`` samples at ``rate`` resampled to ``target`` by resample_poly."""
    d = math.gcd(rate, target)
    return -(-n * (target // d) // (rate // d))


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    from scipy.signal import resample_poly

    d = math.gcd(rate, target)
    return resample_poly(np.asarray(x, dtype=np.float64), target // d, rate // d).astype(np.float32)


class TensorDictDataset(Dataset):
    """Rows of equally long tensors, returned as dicts with ``target`` and ``index``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], targets: np.ndarray) -> None:
        self.tensors = dict(tensors)
        self.targets = torch.tensor(np.array(targets), dtype=torch.long)
        for k, v in self.tensors.items():
            if len(v) != len(self.targets):
                raise ValueError(f"{k}: {len(v)} rows for {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {k: v[i] for k, v in self.tensors.items()}
        item["target"] = self.targets[i]
        item["index"] = torch.as_tensor(i, dtype=torch.long)
        return item


class StreamingClipDataset(Dataset):
    """Clips read from the memory-mapped ``audio.npy`` and encoded one at a time (``data.streaming: true``).

    Memory stays flat in the number of clips: nothing but the current batch's features is held (the
    real processor pads every clip to 30 s, about 1.5 MB of features a clip). Items equal the in-memory
    dataset's rows: ``input_ids`` and ``attention_mask`` are right-padded to the split's longest prompt.

    Args:
        load: ``load(i)`` -> the i-th clip of the split (cut at its length, resampled when configured).
        encode: ``encode(clip)`` -> the processor inputs of one clip, each with a leading batch dimension of 1.
        targets: (N,) labels.
        length: Tokens of the split's longest prompt.
        pad_id: The tokenizer's padding id.
    """

    def __init__(self, load: Callable[[int], np.ndarray], encode: Callable[[np.ndarray], Mapping[str, torch.Tensor]],
                 targets: np.ndarray, length: int, pad_id: int) -> None:
        self.load, self.encode, self.length, self.pad_id = load, encode, int(length), int(pad_id)
        self.targets = torch.tensor(np.array(targets), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        inputs = self.encode(self.load(i))
        item = {k: inputs[k][0] for k in INPUT_KEYS}
        short = self.length - item["input_ids"].shape[0]
        if short > 0:  # right padding, as the processor pads a whole split
            item["input_ids"] = torch.nn.functional.pad(item["input_ids"], (0, short), value=self.pad_id)
            item["attention_mask"] = torch.nn.functional.pad(item["attention_mask"], (0, short), value=0)
        item["target"] = self.targets[i]
        item["index"] = torch.as_tensor(i, dtype=torch.long)
        return item


def assign_splits(frame: pd.DataFrame, test_fraction: float, dev_fraction: float, dev_seed: int,
                  resplit_seed: int | None, source: str) -> pd.Series:
    """train / val (dev) / test of every row, by whole groups.

    Args:
        frame: The manifest (``group``, ``label``; ``split`` = train/test when it has one).
        test_fraction: Fraction of each class's groups held out for test when splits are drawn here.
        dev_fraction: Fraction of each class's training groups carved out as dev (``val``).
        dev_seed: Seed of the dev carve-out.
        resplit_seed: Draw train/test here with this seed even when the manifest has a split column.
        source: The manifest path, for error messages.
    """
    groups, labels = frame["group"].to_numpy(), frame["label"].to_numpy()
    if resplit_seed is not None or "split" not in frame.columns:
        test = group_split(groups, labels, test_fraction, 0 if resplit_seed is None else int(resplit_seed))
        split = np.where(test, "test", "train").astype(object)
    else:
        split = frame["split"].astype(str).str.lower().to_numpy().astype(object)
        bad = sorted(set(split) - {"train", "test"})
        if bad:
            raise ValueError(f"{source}: column 'split' has {bad}; expected train/test (dev is carved from train here)")
    train = split == "train"
    dev = np.zeros(len(frame), dtype=bool)
    dev[train] = group_split(groups[train], labels[train], dev_fraction, dev_seed)
    split[dev] = "val"
    return pd.Series(split, index=frame.index, name="split")


class AudioDataModule(BaseDataModule):
    """Qwen2-Audio inputs for SPEECH / NONSPEECH clips (see the module docstring).

    Args:
        manifest_path: A manifest parquet with ``audio.npy`` beside it; null = the embedded simulation.
        cache_dir: Where the simulation is cached (``${paths.data_dir}``).
        simulation: Settings of the simulation (AudioSimConfig fields).
        dev_fraction: Fraction of each class's training groups that form the dev split (``val``).
        dev_seed: Seed of the dev carve-out (fixed across training seeds: every seed sees the same split).
        test_fraction: Fraction of each class's groups for test when the splits are drawn here.
        resplit_seed: null keeps the manifest's train/test; an integer draws them again by groups.
        processor_path: A processor directory (the real model's); null = the tiny model's processor,
            built from ``tiny`` and ``answers`` (the same one the tiny base saves).
        tiny: The tiny model's settings (``${model.net.tiny}``).
        answers: The answer words (``${model.net.answers}``).
        prompt: The question with one ``<|AUDIO|>`` (``${model.net.prompt}``).
        resample: Clips whose manifest ``sample_rate`` differs from the processor's are refused (false) or
            resampled to it (true, logged). A manifest without the column is taken to be at the processor's rate.
        batch_size, num_workers, seed: As in BaseDataModule.
        streaming: Read and encode clips per item from the memory map (StreamingClipDataset: flat memory, for
            large real sets) instead of encoding every split up front.
    """

    def __init__(self, manifest_path: str | None = None, cache_dir: str = "data", simulation: Mapping[str, Any] | None = None,
                 dev_fraction: float = 0.2, dev_seed: int = 42, test_fraction: float = 0.2, resplit_seed: int | None = None,
                 processor_path: str | None = None, tiny: Mapping[str, Any] | None = None,
                 answers: Sequence[str] = ("NONSPEECH", "SPEECH"), prompt: str = "", resample: bool = False,
                 batch_size: int = 16, num_workers: int = 0, seed: int = 0, streaming: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if not 0.0 < dev_fraction < 1.0:
            raise ValueError(f"data.dev_fraction must lie in (0, 1), got {dev_fraction}")
        self.manifest_path = Path(manifest_path) if manifest_path else None
        self.cache_dir = Path(cache_dir)
        self.simulation = dict(simulation or {})
        self.dev_fraction = float(dev_fraction)
        self.dev_seed = int(dev_seed)
        self.test_fraction = float(test_fraction)
        self.resplit_seed = resplit_seed
        self.processor_path = processor_path
        self.tiny = dict(tiny or {})
        self.answers = list(answers)
        self.prompt = prompt
        self.resample = bool(resample)
        self.streaming = bool(streaming)
        self.audit: dict[str, int] = {}
        self._manifest: pd.DataFrame | None = None

    # --- data on disk ------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.manifest_path is None:
            ensure_audio_dataset(self.cache_dir, self.simulation)

    def resolved_manifest(self) -> Path:
        """The manifest in use (the cached simulation when none is given)."""
        if self.manifest_path is not None:
            if not self.manifest_path.exists():
                raise FileNotFoundError(f"data.manifest_path: {self.manifest_path} does not exist")
            return self.manifest_path
        return ensure_audio_dataset(self.cache_dir, self.simulation)

    def manifest(self) -> pd.DataFrame:
        """The manifest with ``split`` (train/val/test) and ``row`` (row in audio.npy); audited."""
        if self._manifest is not None:
            return self._manifest
        path = self.resolved_manifest()
        frame = pd.read_parquet(path)
        check_columns(frame, REQUIRED, path)
        frame = frame.reset_index(drop=True)
        frame["label"] = normalise_labels(frame["label"], str(path))
        frame["row"] = np.arange(len(frame))
        check_lengths(frame, str(path))
        frame["num_samples"] = self.check_sample_rates(frame, str(path))
        # splits and the audit see group ids without case or spaces ("Spk 1" is "spk1"); the frame keeps them as written
        keyed = frame.assign(group=normalise_groups(frame["group"], str(path)))
        frame["split"] = assign_splits(keyed, self.test_fraction, self.dev_fraction, self.dev_seed, self.resplit_seed, str(path))
        # the audit runs before every run: a split that shares a group is refused, naming the groups
        self.audit = audit_leakage({s: keyed.loc[frame["split"] == s, "group"].to_numpy() for s in ("train", "val", "test")})
        for s in ("train", "val", "test"):
            if frame.loc[frame["split"] == s, "label"].nunique() < 2:
                raise ValueError(f"{path}: split {s!r} holds only one label; it needs SPEECH and NONSPEECH groups")
        self._manifest = frame
        return frame

    def target_rate(self) -> int:
        """The processor's sampling rate (Hz): what every clip must be at."""
        if self.processor_path:
            return int(self.processor().feature_extractor.sampling_rate)
        if "sample_rate" not in self.tiny:
            raise ValueError("data.tiny: the tiny model's settings are needed when data.processor_path is null")
        return int(self.tiny["sample_rate"])

    def check_sample_rates(self, frame: pd.DataFrame, source: str) -> pd.Series:
        """Refuse (or, with data.resample, plan to resample) clips not at the processor's rate; their new lengths.

        Returns:
            ``num_samples`` after resampling (unchanged when every clip is at the processor's rate).
        """
        if "sample_rate" not in frame.columns:
            return frame["num_samples"]
        target = self.target_rate()
        rates = pd.to_numeric(frame["sample_rate"], errors="coerce")
        off = frame.loc[rates != target]
        if off.empty:
            return frame["num_samples"]
        found = sorted({str(int(r)) if np.isfinite(r) else "nan" for r in rates[off.index]})
        ids = ", ".join(off["sample_id"].astype(str).head(5)) + (" ..." if len(off) > 5 else "")
        if not self.resample:
            raise ValueError(f"{source}: {len(off)} clip(s) at {'/'.join(found)} Hz, but the processor expects {target} Hz "
                             f"(e.g. {ids}): refused, the features would be those of other sounds. Resample them "
                             f"(datamodules.audio.simulate.import_audio_clips(..., sample_rate={target})) or set data.resample=true")
        if not rates[off.index].gt(0).all():
            raise ValueError(f"{source}: column 'sample_rate' has {found} (e.g. {ids}); expected a positive rate in Hz")
        log.warning("%s: resampling %d clip(s) from %s Hz to the processor's %d Hz (data.resample=true), e.g. %s",
                    source, len(off), "/".join(found), target, ids)
        self._rates, self._raw_lengths, self._target = rates.to_numpy(), frame["num_samples"].to_numpy(), target
        return pd.Series([_resampled_length(int(n), int(r), target) if r != target else int(n)
                          for n, r in zip(frame["num_samples"], rates)], index=frame.index)

    def audio(self, split: str) -> np.ndarray:
        """The clips of a split, (N, samples) float32, in split_frame order (resampled when data.resample says so).

        Raises:
            ValueError: naming the file for an unreadable or truncated array, or the clips holding NaN/inf.
        """
        frame = self.manifest()
        path = self.resolved_manifest().parent / AUDIO_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: the audio array of the manifest is missing")
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:  # a truncated copy: "mmap length is greater than file size"
            raise ValueError(f"{path}: the audio array cannot be read ({type(err).__name__}: {err}); is it truncated "
                             f"(an interrupted copy)? Write it again") from err
        if array.ndim != 2 or len(frame) != array.shape[0]:
            raise ValueError(f"{path}: shape {array.shape}, expected ({len(frame)}, samples): one row per manifest row")
        part = frame.loc[frame["split"] == split]
        rows = part["row"].to_numpy()
        out = np.asarray(array[rows], dtype=np.float32)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            ids = part["sample_id"].astype(str).to_numpy()[bad]
            raise ValueError(f"{path}: {int(bad.sum())} clip(s) hold NaN or inf samples: {', '.join(ids[:10])}"
                             f"{' ...' if bad.sum() > 10 else ''} (rows {', '.join(map(str, rows[bad][:10]))})")
        if getattr(self, "_rates", None) is None:
            return out
        lengths = part["num_samples"].to_numpy()
        clips = [_resample(a[: int(n)], int(r), self._target) if r != self._target else a
                 for a, r, n in zip(out, self._rates[rows], self._raw_lengths[rows])]
        padded = np.zeros((len(clips), max([int(n) for n in lengths] + [1])), dtype=np.float32)
        for i, (c, n) in enumerate(zip(clips, lengths)):
            padded[i, : int(n)] = c[: int(n)]
        return padded

    def clips(self, split: str) -> list[np.ndarray]:
        """The clips of a split without their zero padding (each cut at its num_samples)."""
        lengths = self.manifest().loc[lambda f: f["split"] == split, "num_samples"].to_numpy()
        return [a[: int(n)] for a, n in zip(self.audio(split), lengths)]

    def data_key(self) -> str:
        """A key of the training clips' content (the tiny base's cache key uses it).

        The samples themselves are hashed, not the manifest's path and ids: clips rewritten under the same
        names are other clips, and the tiny base pretrained on the old ones must not be reused.
        """
        frame = self.manifest()
        train = frame.loc[frame["split"] == "train"]
        digest = hashlib.sha256(",".join(train["sample_id"].astype(str)).encode())
        digest.update(np.ascontiguousarray(train["num_samples"].to_numpy(dtype=np.int64)).tobytes())
        digest.update(np.ascontiguousarray(self.audio("train")).tobytes())
        return digest.hexdigest()[:16]

    def streaming_dataset(self, split: str, processor: Any, sample_rate: int) -> StreamingClipDataset:
        """The split's clips read and encoded per item from the memory map (flat memory)."""
        from lightning_modules.audio.qwen2_audio import encode_prompts

        frame = self.manifest()
        part = frame.loc[frame["split"] == split]
        array = np.load(self.resolved_manifest().parent / AUDIO_NAME, mmap_mode="r")
        rows, lengths = part["row"].to_numpy(), part["num_samples"].to_numpy()
        rates = getattr(self, "_rates", None)
        ids = part["sample_id"].astype(str).to_numpy()

        def load(i: int) -> np.ndarray:
            r = int(rows[i])
            if rates is not None and rates[r] != self._target:
                clip = _resample(np.asarray(array[r, : int(self._raw_lengths[r])], dtype=np.float32), int(rates[r]), self._target)
            else:
                clip = np.asarray(array[r, : int(lengths[i])], dtype=np.float32)
            if not np.isfinite(clip).all():
                raise ValueError(f"{self.resolved_manifest().parent / AUDIO_NAME}: clip {ids[i]} (row {r}) holds NaN or inf samples")
            return clip[: int(lengths[i])]

        def encode(clip: np.ndarray) -> Mapping[str, torch.Tensor]:
            return encode_prompts(processor, [clip], self.prompt, sample_rate)

        # the longest prompt belongs to the longest clip (audio tokens grow with the clip's length)
        longest = encode(load(int(np.argmax(lengths))))["input_ids"].shape[1] if len(lengths) else 0
        return StreamingClipDataset(load, encode, part["label"].to_numpy(), longest, int(processor.tokenizer.pad_token_id))

    # --- model inputs -------------------------------------------------------------------------------
    def processor(self) -> Any:
        from lightning_modules.audio.qwen2_audio import build_processor

        if self.processor_path:
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(self.processor_path, local_files_only=True)
        if not self.tiny:
            raise ValueError("data.tiny: the tiny model's settings are needed when data.processor_path is null")
        return build_processor(self.tiny, self.answers)

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        from lightning_modules.audio.qwen2_audio import encode_prompts

        frame = self.manifest()
        processor = self.processor()
        sample_rate = int(processor.feature_extractor.sampling_rate)
        for split in ("train", "val", "test"):
            part = frame[frame["split"] == split].reset_index(drop=True)
            if self.streaming:
                self.datasets[split] = self.streaming_dataset(split, processor, sample_rate)
            else:
                inputs = encode_prompts(processor, self.clips(split), self.prompt, sample_rate)
                self.datasets[split] = TensorDictDataset({k: inputs[k] for k in INPUT_KEYS}, part["label"].to_numpy())
            out = pd.DataFrame({"sample_id": part["sample_id"].astype(str), "target": part["label"],
                                "label_name": [LABEL_NAMES[v] for v in part["label"]]})
            meta = [c for c in ("group", "snr_db", "duration", "kind", "split") if c in part.columns]
            self.frames[split] = pd.concat([out, part[meta]], axis=1)
