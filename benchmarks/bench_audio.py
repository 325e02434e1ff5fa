"""Speed of the audio family (seed 003), as ratios against a baseline measured in the same run.

    python benchmarks/bench_audio.py                  # every check, prints a markdown table
    python benchmarks/bench_audio.py --steps 30 --batch-size 16

1. Training step (forward + backward + AdamW on the adapters) of each LoRA grid point (the seed's six
   r/alpha points, attention and attention + MLP), stepped alternately with the baseline r=16,
   alpha=32, attention in one process at one thread, so both see the same machine load (target: every
   point within 1.5x of it); peak resident memory of each point in a process of its own.
2. LoRA step vs a full fine-tuning step of the same tiny Qwen2-Audio (reported: on a model this small
   the adapters' extra matmuls cost about what the frozen weights' gradients save).
3. eSpeak NG synthesis (ms an utterance through the C API) and whole-clip generation (clips/s) vs the
   clips/s a training step consumes (target: generation at least as fast as training, so the cache is
   never the bottleneck).

The tiny base is built with a 20-step pretext in a temporary directory (its speed does not depend on
how well it was pretrained).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GRID = [(8, 16), (8, 32), (16, 32), (16, 64), (32, 32), (32, 64)]
BASELINE = ("attention", 16, 32)


def _config() -> tuple[dict, dict, str]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "model" / "audio_qwen2_lora.yaml")
    tiny = OmegaConf.to_container(cfg.net.tiny)
    pretext = OmegaConf.to_container(cfg.net.pretext)
    pretext["steps"] = 20
    return tiny, pretext, str(cfg.net.prompt)


def build_base(cache: Path) -> Path:
    """A tiny base pretrained for 20 steps on random clips (speed only)."""
    import numpy as np

    from lightning_modules.audio.qwen2_audio import ensure_tiny_base

    tiny, pretext, _ = _config()
    audio = np.random.default_rng(0).standard_normal((64, 16000)).astype(np.float32) * 0.1
    return ensure_tiny_base(cache, tiny, pretext, ["NONSPEECH", "SPEECH"], lambda: (audio, "bench"), progress=False)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it starts afresh at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _net_and_step(base: str, targets: str, r: int, alpha: int, batch_size: int, full: bool):
    import numpy as np
    import torch

    from lightning_modules.audio.qwen2_audio import Qwen2AudioAnswer, encode_prompts

    torch.manual_seed(0)
    _, _, prompt = _config()
    net = Qwen2AudioAnswer(base, ["NONSPEECH", "SPEECH"], prompt, None if full else
                           {"targets": targets, "r": r, "alpha": alpha, "dropout": 0.05})
    if full:
        for p in net.parameters():
            p.requires_grad_(True)
    clips = list(np.random.default_rng(1).standard_normal((batch_size, 16000)).astype(np.float32) * 0.1)
    batch = encode_prompts(net.processor, clips, prompt, 16000)
    target = (torch.arange(batch_size) % 2).float()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    net.train()

    def step() -> float:
        t = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(**batch), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    return step, sum(p.numel() for p in params)


def worker(base: str, targets: str, r: int, alpha: int, steps: int, batch_size: int, full: bool, mode: str) -> dict:
    """mode "time": the point and the baseline stepped alternately in this process (same load), medians;
    mode "memory": the point alone for a few steps, peak resident memory."""
    import torch

    torch.set_num_threads(1)
    step, trainable = _net_and_step(base, targets, r, alpha, batch_size, full)
    if mode == "memory":
        for _ in range(5):
            step()
        return {"peak_rss_mb": _peak_rss_mb(), "trainable": trainable}
    ref_step, _ = _net_and_step(base, *BASELINE, batch_size, False)
    times, ref_times = [], []
    for i in range(steps + 3):
        a, b = step(), ref_step()
        if i >= 3:  # warm-up steps left out
            times.append(a)
            ref_times.append(b)
    return {"step_s": statistics.median(times), "ref_step_s": statistics.median(ref_times), "trainable": trainable,
            "ratio": statistics.median(t / r_ for t, r_ in zip(times, ref_times))}


def run_worker(base: Path, targets: str, r: int, alpha: int, steps: int, batch_size: int, full: bool = False,
               mode: str = "time") -> dict:
    cmd = [sys.executable, __file__, "--worker", str(base), targets, str(r), str(alpha), str(steps), str(batch_size),
           str(int(full)), mode]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def synthesis_speed(n: int = 200) -> dict:
    """eSpeak NG ms per utterance and full simulated clips per second."""
    from datamodules.audio.simulate import ESpeak, simulate_audio_dataset

    engine = ESpeak.get()
    engine.synth("warm up", "en+m1", 50, 175)
    t = time.perf_counter()
    for i in range(n):
        engine.synth("hello water open", f"en+m{1 + i % 7}", 30 + i % 50, 120 + i % 100)
    per_utt = (time.perf_counter() - t) / n
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"n_speakers": 10, "clips_per_speaker": 10, "n_sources": 7, "clips_per_source": 15}
        t = time.perf_counter()
        simulate_audio_dataset(tmp, cfg, progress=False)
        clips_s = (10 * 10 + 7 * 15) / (time.perf_counter() - t)
    return {"ms_per_utterance": 1000 * per_utt, "clips_per_s": clips_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        base, targets, r, alpha, steps, batch, full, mode = args.worker
        print(json.dumps(worker(base, targets, int(r), int(alpha), int(steps), int(batch), bool(int(full)), mode)))
        return

    points = [(t, r, a, False) for t in ("attention", "attention_mlp") for r, a in GRID] + [("attention", 16, 32, True)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = build_base(Path(tmp))
        for targets, r, alpha, full in points:
            timing = run_worker(base, targets, r, alpha, args.steps, args.batch_size, full)
            memory = run_worker(base, targets, r, alpha, 0, args.batch_size, full, mode="memory")
            results[(targets, r, alpha, full)] = {**timing, **memory}
    print(f"batch {args.batch_size}, {args.steps} timed steps, one thread; each point stepped alternately with the "
          "baseline (r=16, alpha=32, attention) in one process; ratio = median of per-step ratios\n")
    print("| targets | r | alpha | trainable params | step (ms) | baseline step in the same process (ms) | ratio "
          "| peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios = []
    for (targets, r, alpha, full), res in results.items():
        name = "full fine-tuning" if full else targets
        if not full:
            ratios.append(res["ratio"])
        print(f"| {name} | {'-' if full else r} | {'-' if full else alpha} | {res['trainable']:,} | {1000 * res['step_s']:.1f} | "
              f"{1000 * res['ref_step_s']:.1f} | {res['ratio']:.2f} | {res['peak_rss_mb']:.0f} |")
    print(f"\nslowest grid point / baseline: {max(ratios):.2f} (target <= 1.5: {'met' if max(ratios) <= 1.5 else 'NOT met'})")
    syn = synthesis_speed()
    ref = statistics.median(res["ref_step_s"] for res in results.values())
    consumed = args.batch_size / ref
    print(f"eSpeak NG: {syn['ms_per_utterance']:.2f} ms an utterance; clip generation {syn['clips_per_s']:.0f} clips/s vs "
          f"{consumed:.0f} clips/s consumed by a baseline training step: ratio {syn['clips_per_s'] / consumed:.1f} "
          f"(target >= 1: {'met' if syn['clips_per_s'] >= consumed else 'NOT met'})")


if __name__ == "__main__":
    main()
