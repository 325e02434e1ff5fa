"""Performance checks of the CLIP subtask family, as ratios against a baseline measured in the same run.

    python benchmarks/bench_clip.py                      # all three, prints a markdown table
    python benchmarks/bench_clip.py --only cache --images 300 --threads 1

1. ``cache``: arm B with a warm embedding cache against arm A computing it: one real
   ``train.py -m experiment=clip_subtask_a,clip_subtask_b`` sweep in a fresh data directory, with the real
   ViT-B-32 architecture at random weights (no weights are downloaded) on a stratified subset of the
   embedded digits: A embeds every split, B finds them in the cache; each job's own wall time from its
   metrics.json (target: B at most 0.1 of A when embedding dominates).
2. ``mc``: MC-Dropout with 25 passes on the meta-learner, batched (lightning_modules/mc_dropout.py:
   the passes stacked into one forward per test batch) against a loop of 25 forwards per batch, on
   10,000 inputs (CIFAR-10's test size) in batches of 128; median of alternating repeats (target: at
   least 3x faster).
3. ``probe``: not speed but the reason the tiny CLIP is pretrained: test accuracy of a logistic-regression
   probe on the default tiny CLIP's embeddings against the same architecture at random weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def bench_cache(images: int, threads: int, epochs: int) -> dict:
    """Arm A (cold cache) then arm B (warm cache) in one ``train.py -m`` sweep, as the seed's study runs.

    A sweep runs its jobs in one process, so each arm's cost is its job's ``wall_time_s`` (metrics.json:
    from the start of the job to metrics.json, data set-up included); the interpreter start is paid once.
    """
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        family = ["data=clip_subtask", "model=clip_subtask", "callbacks=clip_subtask", "thresholds=clip_subtask"]
        common = ["data.clip.model=ViT-B-32", "data.clip.allow_random_weights=true", f"data.split.subset={images}",
                  f"data.split.val_size={images // 6}", f"data.split.test_size={images // 6}", f"paths.data_dir={tmp}/data",
                  f"paths.sweep_dir={tmp}/multirun", "logger=csv", f"cpu_threads={threads}", f"trainer.max_epochs={epochs}",
                  "trainer.enable_progress_bar=false"]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "train.py", "-m", "experiment=clip_subtask_a,clip_subtask_b", *family, *common],
                              cwd=ROOT, capture_output=True, text=True)
        out["process_s"] = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        for path in Path(tmp, "multirun").rglob("metrics.json"):
            metrics = json.loads(path.read_text())
            arm = metrics["experiment"][-1]
            out[f"wall_{arm}"] = float(metrics["wall_time_s"])
            out[f"hits_{arm}"] = (path.parent / "train.log").read_text().count("embedding cache hit")
        meta = [json.loads(p.read_text()) for p in Path(tmp, "data", "clip_embeddings").glob("*.json")]
        out["embedding_s"] = sum(m["seconds"] for m in meta)
        out["n_embedded"] = sum(m["shape"][0] for m in meta)
    out["ratio"] = out["wall_b"] / out["wall_a"]
    return out


def bench_mc(n: int, batch_size: int, passes: int, repeats: int) -> dict:
    """Batched vs looped MC-Dropout on the meta-learner (512 + 3 inputs), same inputs, same passes."""
    from lightning_modules.clip_subtask.module import ClipSubtaskModule
    from lightning_modules.mc_dropout import MCDropout, dropout_layers
    from lightning_modules.clip_subtask.nets import SubtaskMetaNet

    torch.manual_seed(0)
    module = ClipSubtaskModule(SubtaskMetaNet(512, {"superclass": 2, "brightness": 3, "complexity": 3}),
                               {"max_epochs": 1, "patience": 1, "batch_size": 1, "lr": 1e-3, "weight_decay": 0.0},
                               functools.partial(torch.optim.Adam, lr=1e-3))
    module.eval()
    x = torch.randn(n, 512)
    batches = [{"embedding": b, "index": torch.arange(len(b)), "target": torch.zeros(len(b), dtype=torch.long)}
               for b in torch.split(x, batch_size)]
    mc = MCDropout(module, passes, max_batch=65536)

    def batched() -> float:
        start = time.perf_counter()
        for batch in batches:
            mc.sample(batch)
        return time.perf_counter() - start

    def looped() -> float:
        start = time.perf_counter()
        module.eval()
        for m in dropout_layers(module):
            m.train()
        with torch.inference_mode():
            for batch in batches:
                torch.stack([module({"embedding": batch["embedding"]}) for _ in range(passes)])
        module.eval()
        return time.perf_counter() - start

    batched(), looped()  # warm-up
    times_b, times_l = [], []
    for _ in range(repeats):
        times_b.append(batched())
        times_l.append(looped())
    b, lo = statistics.median(times_b), statistics.median(times_l)
    return {"batched_s": b, "looped_s": lo, "speedup": lo / b}


def bench_probe() -> dict:
    """Logistic-regression probe accuracy (test) on the default tiny CLIP's embeddings vs random weights."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from datamodules.clip_subtask.embeddings import EmbeddingCache, load_clip
    from tests.conftest import compose

    import hydra

    cfg = compose(["experiment=clip_subtask_a"])
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")

    def probe(train: np.ndarray, test: np.ndarray) -> float:
        clf = LogisticRegression(max_iter=3000).fit(train, dm.split_frame("train")["target"])
        return float(clf.score(test, dm.split_frame("test")["target"]))

    pretrained = probe(dm.split_tensors("train")["embedding"].numpy(), dm.split_tensors("test")["embedding"].numpy())
    splits = dm.split_images()
    clip = load_clip(cfg.data.clip.tiny.model_name, None)
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp)
        emb = {s: cache.get(clip, splits[s][0], "probe", s) for s in ("train", "test")}
    return {"pretrained": pretrained, "random": probe(emb["train"], emb["test"]), "n_test": len(dm.split_frame("test"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["cache", "mc", "probe"], default=None)
    parser.add_argument("--images", type=int, default=300, help="cache: digits embedded by ViT-B-32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=50, help="cache: max meta-learner epochs (early stopping applies)")
    parser.add_argument("--n", type=int, default=10_000, help="mc: inputs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--passes", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = ["| check | measured | ratio | target | verdict |", "| --- | --- | --- | --- | --- |"]
    if args.only in (None, "cache"):
        r = bench_cache(args.images, args.threads, args.epochs)
        rows.append(f"| Arm B with a warm embedding cache vs arm A computing it: jobs of one train.py -m sweep, ViT-B-32 at random "
                    f"weights, {r['n_embedded']} digits embedded by A (embedding {r['embedding_s']:.1f} s; whole sweep "
                    f"{r['process_s']:.0f} s), cache hits A/B = "
                    f"{r['hits_a']}/{r['hits_b']} | {r['wall_b']:.1f} s vs {r['wall_a']:.1f} s | {r['ratio']:.3f} | <= 0.1 | "
                    f"{'met' if r['ratio'] <= 0.1 else 'not met'} |")
    if args.only in (None, "mc"):
        r = bench_mc(args.n, args.batch_size, args.passes, args.repeats)
        rows.append(f"| MC-Dropout, {args.passes} passes on the meta-learner, {args.n:,} inputs in batches of {args.batch_size}: "
                    f"looped vs batched (median of {args.repeats}) | {r['looped_s']:.2f} s vs {r['batched_s']:.2f} s | "
                    f"{r['speedup']:.2f}x | >= 3x | {'met' if r['speedup'] >= 3 else 'not met'} |")
    if args.only in (None, "probe"):
        r = bench_probe()
        rows.append(f"| Logistic-regression probe, test accuracy ({r['n_test']} digits): default tiny CLIP vs random weights | "
                    f"{r['pretrained']:.3f} vs {r['random']:.3f} | | | reported |")
    print(f"torch threads: {torch.get_num_threads()}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
