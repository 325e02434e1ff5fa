"""Memory of the audio family at scale (issue 23 item 4): in-memory features against ``data.streaming=true``.

    python benchmarks/bench_audio_memory.py                      # 300 and 1,200 clips, prints markdown tables
    python benchmarks/bench_audio_memory.py --sizes 50 100       # a quick check
    python benchmarks/bench_audio_memory.py --sizes 300 1200 --dir /tmp/bam --json /tmp/bam.json

1. Data: for each size N, N clips of 0.6-1.0 s at 16 kHz (NONSPEECH: coloured noise; SPEECH: a voiced tone
   with a 4 Hz syllable-like envelope, plain numpy), written as .wav files with a metadata CSV and turned into
   ``manifest.parquet`` + ``audio.npy`` by ``datamodules.audio.simulate.import_audio_clips`` (the path real
   clips take). 20 groups (10 a class), so every size has the same split fractions (about 64% train).
2. A processor that pads like the real Qwen2-Audio one: WhisperFeatureExtractor(feature_size=128,
   chunk_length=30, sampling_rate=16000) (every clip padded to 30 s: 3,000 frames x 128 mels, 1.5 MB of
   float32 features a clip) + the tiny model's byte tokenizer, saved with ``save_pretrained`` and read by the
   datamodule through ``data.processor_path``, as the real model's processor is. (The tiny processor of
   conf/model/audio_qwen2_lora.yaml pads to 1 s x 80 mels, 38x less, so it would hide the cost.)
3. One fresh subprocess per (mode, N), at one thread: imports, then ``AudioDataModule(...).setup("fit")``
   and one full pass over ``train_dataloader()`` (batch size 8). Peak RSS is the process's VmHWM (it starts
   afresh at exec, unlike ru_maxrss of a forked child); wall and CPU time of setup + pass.
   A baseline subprocess makes the same imports and loads the processor but reads no clips: "extra" is a
   run's peak RSS minus the baseline's, the memory the clips cost. Also printed: the RSS at the end (anonymous
   / file-backed, the memory map's pages among the latter) and the bytes of the tensors the datasets hold.
   A size whose in-memory run would not fit in the machine's available memory (about 11 MB a clip at the
   peak) is refused before it starts.

Reported: peak RSS per mode and size, extra over the baseline, extra at the large size / extra at the
small one (flat = 1; in-memory should approach the size ratio), MB a clip in-memory, and the rate of the
streaming run against the in-memory one at the large size. Wall times swing with the machine's load; the
CPU times are printed beside them. The script reports ratios; it asserts nothing. Results:
docs/benchmarks.md, "Audio: streaming features, memory at scale".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLE_RATE = 16000
N_GROUPS = 20
MB_PER_CLIP_GUESS = 11  # in-memory peak a clip (measured: ~10.3 MB), to refuse sizes that would exhaust the machine
PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|>Is there human speech in this clip? Answer SPEECH or NONSPEECH:"
ANSWERS = ["NONSPEECH", "SPEECH"]


def write_clips(out_dir: Path, n: int, seed: int = 0) -> Path:
    """n synthetic clips as .wav + metadata CSV, imported into manifest.parquet + audio.npy (once)."""
    import pandas as pd
    from scipy.io import wavfile

    from datamodules.audio.simulate import MANIFEST_NAME, import_audio_clips

    manifest = out_dir / MANIFEST_NAME
    if manifest.exists():
        return manifest
    wavs = out_dir / "wav"
    wavs.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        group = i % N_GROUPS
        label = group % 2
        length = int(rng.integers(int(0.6 * SAMPLE_RATE), SAMPLE_RATE + 1))
        t = np.arange(length) / SAMPLE_RATE
        noise = rng.standard_normal(length)
        if label:  # a voiced tone with harmonics under a 4 Hz envelope, in noise
            f0 = rng.uniform(90, 250)
            voice = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
            clip = voice * (0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)) + 0.1 * noise
        else:  # white or brown noise
            clip = noise if rng.random() < 0.5 else np.cumsum(noise) / np.sqrt(length)
        clip = 0.1 * clip / max(float(np.sqrt(np.mean(clip**2))), 1e-12)
        path = wavs / f"clip_{i:06d}.wav"
        wavfile.write(path, SAMPLE_RATE, np.clip(clip, -1, 1).astype(np.float32))
        rows.append({"audio_path": str(path.relative_to(out_dir)), "label": "SPEECH" if label else "NONSPEECH",
                     "group": f"g{group:02d}", "sample_id": f"clip_{i:06d}"})
    pd.DataFrame(rows).to_csv(out_dir / "clips.csv", index=False)
    manifest = import_audio_clips(out_dir / "clips.csv", out_dir, sample_rate=SAMPLE_RATE, progress=False)
    shutil.rmtree(wavs)
    return manifest


def save_processor(out_dir: Path) -> Path:
    """The real model's feature-extractor settings (30 s, 128 mels) with the tiny byte tokenizer, saved."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    from lightning_modules.audio.qwen2_audio import build_tokenizer

    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=30, sampling_rate=SAMPLE_RATE)
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=build_tokenizer(ANSWERS)).save_pretrained(out_dir)
    return out_dir


def _status_mb() -> dict[str, float]:
    """This process's VmHWM (peak), VmRSS, RssAnon and RssFile (MB) from /proc/self/status."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    if "VmHWM" not in out:
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def worker(mode: str, manifest: str, processor_dir: str, batch_size: int) -> dict:
    """mode "baseline": imports + the processor, no clips; "memory" / "streaming": setup + one train pass."""
    import torch

    from datamodules.audio.datamodule import AudioDataModule  # noqa: F401  (the same imports in every mode)
    from lightning_modules.audio.qwen2_audio import encode_prompts  # noqa: F401
    from transformers import AutoProcessor

    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(processor_dir, local_files_only=True)
    after_imports = _status_mb()
    if mode == "baseline":
        return {"mode": mode, "after_imports": after_imports, "end": _status_mb(),
                "n_samples": processor.feature_extractor.n_samples}
    del processor
    wall, cpu = time.perf_counter(), time.process_time()
    dm = AudioDataModule(manifest_path=manifest, processor_path=processor_dir, prompt=PROMPT, answers=ANSWERS,
                         batch_size=batch_size, num_workers=0, seed=0, streaming=mode == "streaming")
    dm.setup("fit")
    setup_wall, setup_cpu = time.perf_counter() - wall, time.process_time() - cpu
    after_setup = _status_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    n, shape = 0, None
    for batch in dm.train_dataloader():
        n += len(batch["target"])
        shape = tuple(batch["input_features"].shape[1:])
    pass_wall, pass_cpu = time.perf_counter() - wall, time.process_time() - cpu
    held = sum(v.nbytes for d in dm.datasets.values() for v in getattr(d, "tensors", {}).values()) / 2**20
    return {"mode": mode, "n_train": n, "n_clips": len(dm.manifest()), "feature_shape": shape, "held_tensors_mb": held,
            "setup_wall": setup_wall, "setup_cpu": setup_cpu, "pass_wall": pass_wall, "pass_cpu": pass_cpu,
            "after_imports": after_imports, "after_setup": after_setup, "end": _status_mb()}


def available_mb() -> float:
    """MemAvailable of the machine (MB)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def run_worker(mode: str, manifest: Path | str, processor_dir: Path, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(manifest), str(processor_dir), str(batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise RuntimeError(f"worker {mode} {manifest} failed (exit {out.returncode})")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall"] = time.perf_counter() - t
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1200],
                        help="numbers of clips (smallest and largest are compared)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None, help="keep data here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, manifest, processor_dir, batch = args.worker
        print(json.dumps(worker(mode, manifest, processor_dir, int(batch))))
        return

    started = time.perf_counter()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_audio_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.sizes))
    try:
        processor_dir = save_processor(work / "processor")
        manifests = {n: write_clips(work / f"clips_{n}", n) for n in sizes}
        print(f"data under {work}: {', '.join(str(n) for n in sizes)} clips; processor pads to 30 s x 128 mels", flush=True)
        base = run_worker("baseline", "-", processor_dir, args.batch_size)
        base_mb = base["end"]["VmHWM"]
        print(f"baseline (imports + processor, no clips): peak RSS {base_mb:.0f} MB, at end anon "
              f"{base['end'].get('RssAnon', float('nan')):.0f} / file-backed "
              f"{base['end'].get('RssFile', float('nan')):.0f} MB", flush=True)
        runs: dict[tuple[str, int], dict] = {}
        for n in sizes:
            for mode in ("memory", "streaming"):
                need = base_mb + (MB_PER_CLIP_GUESS * n if mode == "memory" else 500)
                if need > available_mb() - 2048:
                    raise SystemExit(f"{mode} n={n} would need about {need / 1024:.1f} GB (about {MB_PER_CLIP_GUESS} MB "
                                     f"a clip in-memory at its peak), {available_mb() / 1024:.1f} GB available: "
                                     "pick smaller --sizes")
                r = run_worker(mode, manifests[n], processor_dir, args.batch_size)
                r["extra_mb"] = r["end"]["VmHWM"] - base_mb
                runs[(mode, n)] = r
                print(f"{mode} n={n}: peak {r['end']['VmHWM']:.0f} MB (extra {r['extra_mb']:.0f}), "
                      f"setup {r['setup_wall']:.1f} s, "
                      f"pass {r['pass_wall']:.1f} s, {r['n_train']} train clips, features {r['feature_shape']}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    names = {"memory": "in-memory (default)", "streaming": "streaming"}
    print(f"\nbatch {args.batch_size}, one thread, one fresh process per row; peak RSS = VmHWM; extra = peak - baseline "
          f"process ({base_mb:.0f} MB: the same imports and the processor, no clips); setup = manifest, splits, audit and "
          "(in-memory) encoding of all three splits; pass = one epoch of the train loader\n")
    print("| mode | clips (train) | peak RSS (MB) | extra over baseline (MB) | RSS at end: anon / file-backed (MB) "
          "| dataset tensors held (MB) | setup wall / CPU (s) | train pass wall / CPU (s) | train clips/s, setup + pass (wall) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (mode, n), r in runs.items():
        end = r["end"]
        rate = r["n_train"] / (r["setup_wall"] + r["pass_wall"])
        print(f"| {names[mode]} | {n:,} ({r['n_train']:,}) | {end['VmHWM']:.0f} | {r['extra_mb']:.0f} | "
              f"{end.get('RssAnon', float('nan')):.0f} / {end.get('RssFile', float('nan')):.0f} | {r['held_tensors_mb']:.0f} | "
              f"{r['setup_wall']:.1f} / {r['setup_cpu']:.1f} | {r['pass_wall']:.1f} / {r['pass_cpu']:.1f} | {rate:.1f} |")

    small, large = sizes[0], sizes[-1]
    summary = {}
    if small != large:
        print(f"\n| mode | extra at {large:,} / extra at {small:,} (size ratio {large / small:.1f}) | extra MB a clip "
              f"(extra at {large:,} - extra at {small:,}) / {large - small:,} | peak at {large:,} / peak at {small:,} |")
        print("| --- | --- | --- | --- |")
        for mode in ("memory", "streaming"):
            a, b = runs[(mode, small)], runs[(mode, large)]
            ratio = b["extra_mb"] / a["extra_mb"] if a["extra_mb"] > 0 else float("nan")
            per_clip = (b["extra_mb"] - a["extra_mb"]) / (large - small)
            summary[mode] = {"extra_ratio": ratio, "mb_per_clip": per_clip}
            print(f"| {names[mode]} | {ratio:.2f} | {per_clip:.3f} | {b['end']['VmHWM'] / a['end']['VmHWM']:.2f} |")
    m, s = runs[("memory", large)], runs[("streaming", large)]
    first = (s["n_train"] / (s["setup_wall"] + s["pass_wall"])) / (m["n_train"] / (m["setup_wall"] + m["pass_wall"]))
    first_cpu = (m["setup_cpu"] + m["pass_cpu"]) / (s["setup_cpu"] + s["pass_cpu"])
    per_epoch = (m["pass_wall"]) / s["pass_wall"]
    encode_m = 1e3 * m["setup_cpu"] / m["n_clips"]
    encode_s = 1e3 * (s["setup_cpu"] + s["pass_cpu"]) / (s["n_train"] + 3)
    summary["rates"] = {"first_epoch_wall": first, "first_epoch_cpu": first_cpu, "later_epoch_wall": per_epoch,
                        "encode_cpu_ms_memory": encode_m, "encode_cpu_ms_streaming": encode_s}
    print(f"\nat {large:,} clips, streaming / in-memory train clips/s: first epoch (setup + pass) {first:.2f} wall, "
          f"{first_cpu:.2f} CPU; a later epoch (pass only; in-memory's is indexing, streaming's re-encodes) "
          f"{per_epoch:.3f} wall. CPU ms a clip encoded: in-memory {encode_m:.1f} (batched, all splits at setup), "
          f"streaming {encode_s:.1f} (one clip a call)")
    print(f"\nscript wall time: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "runs": {f"{k[0]}_{k[1]}": v for k, v in runs.items()},
                                         "summary": summary}, indent=1, default=str))


if __name__ == "__main__":
    main()
