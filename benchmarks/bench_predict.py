"""Scoring new lens cutouts at scale (issue 20): rate and peak memory of ``evaluate.py task=predict``.

    python benchmarks/bench_predict.py                                  # 200,000 and 20,000 cutouts
    python benchmarks/bench_predict.py --sizes 20000 100000 --workers 0 1 --dir /scratch/bench

1. Data: for each size, an unlabelled manifest (sample_id, ra, dec) and an (N, 3, 63, 63) image array of
   random values (float32 by default, ``--dtype float16`` halves the disk; the datamodule reads both),
   written once, chunk by chunk, under ``--dir`` (default: a temporary directory, removed afterwards).
   200,000 float32 stamps of 3 x 63 x 63 are 9.5 GB; check ``df -h`` first.
2. A checkpoint: a tiny lens run (``train.py experiment=lens_smoke debug=fast`` on toy cutouts: the real
   ResNet18, a few steps of training), the same run every size is scored with.
3. (a) Pure inference: the run's module on in-memory tensors, same batch size, precision (32-true),
   channels_last as configured, torch threads (``--threads``), under ``torch.inference_mode``.
   (b) Scoring through the real path, one subprocess per size and ``data.num_workers`` value:
   ``python evaluate.py task=predict ckpt_path=... trainer=cpu 'data_overrides=[data.manifest_path=...,
   data.num_workers=W]'`` with ``OMP_NUM_THREADS`` = ``--threads``. Rates: the progress bar's own count
   and elapsed time (the scoring loop), and the whole command (start-up, data checks and writing included).
   (c) Peak memory of each command: the largest sum of RSS over the process and its workers, sampled
   every 0.2 s (psutil), and the peak RSS of the largest single process.

Wall-clock rates swing when other jobs share the cores; the CPU time per image (process_time for (a),
the children's user + system time for (b)) is printed too. The script reports ratios; it asserts
nothing. Results: docs/benchmarks.md, "Scoring new cutouts".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_cutouts(out_dir: Path, n: int, size: int = 63, dtype: str = "float32", chunk: int = 4096, seed: int = 0) -> Path:
    """An unlabelled manifest and its (n, 3, size, size) random image array, written chunk by chunk (once)."""
    manifest = out_dir / "manifest.parquet"
    if manifest.exists():
        return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(out_dir / "images.npy", mode="w+", dtype=np.dtype(dtype), shape=(n, 3, size, size))
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        images[start:stop] = rng.standard_normal((stop - start, 3, size, size), dtype=np.float32).astype(dtype)
        images.flush()
    del images
    ids = np.arange(n)
    pd.DataFrame({"sample_id": [f"c{i:07d}" for i in ids], "ra": 150.0 + ids * 1e-5, "dec": 2.0 - ids * 1e-5}).to_parquet(manifest)
    return manifest


def tiny_run(work: Path, threads: int) -> Path:
    """A lens run trained for a few steps on toy cutouts; its best.ckpt."""
    from tests.helpers import write_toy_lens_data

    run = work / "run"
    ckpt = run / "checkpoints" / "best.ckpt"
    if ckpt.exists():
        return ckpt
    toy = write_toy_lens_data(work / "toy")
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "train.py", "experiment=lens_smoke", f"data.manifest_path={toy}", "data.batch_size=16",
                    "debug=fast", "logger=csv", f"cpu_threads={threads}", f"hydra.run.dir={run}"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return ckpt


def pure_inference(ckpt: Path, batch_size: int, threads: int, n_batches: int) -> dict[str, float]:
    """(a): the module's forward on in-memory tensors, as Lightning's predict loop runs it."""
    import hydra
    import torch

    from tasks.predict import run_config

    torch.set_num_threads(threads)
    cfg, _ = run_config(ckpt)
    module = hydra.utils.instantiate(cfg.model)
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    module.eval()
    x = torch.randn(batch_size, 3, 63, 63)
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            module({"image": x})
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n_batches):
            module({"image": x})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = n_batches * batch_size
    return {"n": n, "wall_rate": n / wall, "cpu_ms_per_image": 1e3 * cpu / n}


class TreeRSS(threading.Thread):
    """Samples the summed RSS of a process and its descendants every `interval` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.peak_one, self.done = pid, interval, 0, 0, False

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done:
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss = p.memory_info().rss
                        total += rss
                        self.peak_one = max(self.peak_one, rss)
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)
            time.sleep(self.interval)


def score(ckpt: Path, manifest: Path, out_dir: Path, workers: int, threads: int, batch_size: int) -> dict[str, float]:
    """(b) and (c): one evaluate.py task=predict command; rates from its progress bar and its wall time."""
    items = [f"data.manifest_path={manifest}", f"data.num_workers={workers}", f"data.batch_size={batch_size}"]
    overrides = "data_overrides=[" + ",".join(f'"{i}"' for i in items) + "]"
    cmd = [sys.executable, "evaluate.py", "task=predict", f"ckpt_path={ckpt}", "trainer=cpu", overrides, "top_k=100",
           f"out_dir={out_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeRSS(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.done = True
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    n = int(json.loads((out_dir / "predictions_test.json").read_text())["n"])
    # the bar's last state: "predict test: 100%|...| 200000/200000 [10:01<00:00, 333sample/s]"
    bars = re.findall(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<", stderr)
    done, _, h, m, s = bars[-1]
    loop = (int(h or 0) * 60 + int(m)) * 60 + int(s)
    shows_rate = bool(re.search(r"sample/s\]", stderr)) and bool(re.search(r"<\d", stderr))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"n": n, "workers": workers, "wall_s": wall, "loop_s": loop, "loop_rate": int(done) / max(loop, 1),
            "command_rate": n / wall, "cpu_ms_per_image": 1e3 * cpu / n, "peak_rss_tree_mb": sampler.peak / 2**20,
            "peak_rss_one_process_mb": sampler.peak_one / 2**20, "bar_shows_rate_and_eta": shows_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="data.num_workers values to score with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pure-batches", type=int, default=40)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--dir", type=Path, default=None, help="keep data here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        need = sum(args.sizes) * 3 * 63 * 63 * np.dtype(args.dtype).itemsize
        free = shutil.disk_usage(work).free
        print(f"data: {need / 1e9:.1f} GB of images under {work} ({free / 1e9:.1f} GB free)", flush=True)
        ckpt = tiny_run(work, args.threads)
        manifests = {n: write_cutouts(work / f"cutouts_{n}", n, dtype=args.dtype) for n in args.sizes}
        pure = pure_inference(ckpt, args.batch_size, args.threads, args.pure_batches)
        print(f"(a) pure inference: {pure['wall_rate']:.0f} images/s, {pure['cpu_ms_per_image']:.2f} ms CPU/image", flush=True)
        results = {"pure": pure, "scoring": []}
        for workers in args.workers:
            for n in args.sizes:
                r = score(ckpt, manifests[n], work / f"out_{n}_{workers}", workers, args.threads, args.batch_size)
                r["loop_vs_pure"] = r["loop_rate"] / pure["wall_rate"]
                r["command_vs_pure"] = r["command_rate"] / pure["wall_rate"]
                r["cpu_pure_vs_scoring"] = pure["cpu_ms_per_image"] / r["cpu_ms_per_image"]
                results["scoring"].append(r)
                print(f"(b) n={n} num_workers={workers}: loop {r['loop_rate']:.0f}/s ({r['loop_vs_pure']:.2f} of pure), "
                      f"command {r['command_rate']:.0f}/s ({r['command_vs_pure']:.2f}), CPU/image {r['cpu_ms_per_image']:.2f} ms "
                      f"(pure/this {r['cpu_pure_vs_scoring']:.2f}); (c) peak RSS {r['peak_rss_tree_mb']:.0f} MB "
                      f"(largest process {r['peak_rss_one_process_mb']:.0f} MB); bar shows rate and time left: "
                      f"{r['bar_shows_rate_and_eta']}", flush=True)
        for workers in args.workers:
            rows = {r["n"]: r for r in results["scoring"] if r["workers"] == workers}
            if len(rows) > 1:
                small, large = rows[min(rows)], rows[max(rows)]
                print(f"num_workers={workers}: peak RSS at n={large['n']} / at n={small['n']}: "
                      f"{large['peak_rss_tree_mb'] / small['peak_rss_tree_mb']:.2f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
