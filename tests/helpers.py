"""Test helpers: a toy lens data set in the real manifest format, and a callback that crashes a run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback


def write_toy_lens_data(out_dir: Path, n: dict[str, int] | None = None, size: int = 63, seed: int = 0) -> Path:
    """Noise stamps with a faint ring (radius θ_E / 0.262 px) for positives; a real-format manifest.

    Not physics: just a fast, learnable stand-in so that tests exercise the real-data code path.
    """
    n = n or {"train": 64, "val": 48, "test": 48}
    rng = np.random.default_rng(seed)
    rows, images = [], []
    r = np.hypot(*np.mgrid[:size, :size] - (size - 1) / 2)
    k = 0
    for split, count in n.items():
        for i in range(count):
            label = i % 2
            theta = rng.uniform(0.5, 3.0) if label else np.nan
            img = rng.normal(0, 1, (3, size, size)) + 5 * np.exp(-(r**2) / 8)  # a host in every stamp
            if label:
                img += 3 * np.exp(-((r - theta / 0.262) ** 2) / 2)
            images.append(img.astype(np.float32))
            rows.append(dict(sample_id=f"toy{k:05d}", split=split, label=label, theta_e=theta,
                             psf_bin=int(rng.integers(0, 3)), depth_bin=int(rng.integers(0, 3)), pair_id=k))
            k += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out_dir / "manifest.parquet")
    np.save(out_dir / "images.npy", np.stack(images))
    return out_dir / "manifest.parquet"


class CrashAfterEpoch(Callback):
    """Raises at the end of a given epoch (after last.ckpt is written), like a killed job."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated crash after epoch {self.epoch}")


def adamw(lr: float = 1e-3, **kwargs: float):
    """The optimizer partial a model config's ``optimizer: {_target_: torch.optim.AdamW, _partial_: true}`` gives."""
    from functools import partial

    import torch

    return partial(torch.optim.AdamW, lr=lr, **kwargs)


def kill_after_first_last_ckpt_and_resume(args: list[str], run_dir: Path, straight_dir: Path,
                                          timeout: float = 300.0) -> tuple[dict, dict]:
    """Run train.py straight (in this process); again in a subprocess, SIGKILLed once last.ckpt appears, and restarted.

    The exact-resume check of every family (issue 21 item 1): a run killed with -9 after its first last.ckpt
    and started again ends with the uninterrupted run's metrics. The kill lands wherever the run is (in
    the next epoch, or in the end-of-run passes); the restart sees the same config, so it resumes.

    Args:
        args: train.py's arguments, without hydra.run.dir.
        run_dir: Directory of the killed and resumed run.
        straight_dir: Directory of the uninterrupted run.
        timeout: Seconds allowed for each start.

    Returns:
        (metrics of the uninterrupted run, metrics of the resumed run).
    """
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}

    def start(directory: Path, quiet: bool = False) -> subprocess.Popen:
        out = subprocess.DEVNULL if quiet else subprocess.PIPE  # the killed start's output is never read
        return subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={directory}"], cwd=root, env=env,
                                stdout=out, stderr=out, text=True)

    def finish(proc: subprocess.Popen) -> None:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, (err or out)[-4000:]

    # the uninterrupted run needs no process of its own (and no 5 s of imports)
    from tests.conftest import train_in_process

    train_in_process(list(args), straight_dir)
    proc = start(run_dir, quiet=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + timeout
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "the run ended or timed out before writing last.ckpt"
    assert not (run_dir / "metrics.json").exists(), "the run completed before it was killed; give it more epochs"
    finish(start(run_dir))
    return (json.loads((straight_dir / "metrics.json").read_text()), json.loads((run_dir / "metrics.json").read_text()))


def metric_differences(a: dict, b: dict, ignore: tuple[str, ...] = ("wall_time_s", "run_dir", "device")) -> list:
    """(key, a, b) of every metrics.json key whose values differ (floats to rel 1e-6), but for ``ignore``."""
    import math

    differ = []
    for key in sorted((set(a) | set(b)) - set(ignore)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, float) and isinstance(vb, float) and not (math.isnan(va) or math.isnan(vb)):
            same = math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-9)
        else:
            same = va == vb or (isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb))
        if not same:
            differ.append((key, va, vb))
    return differ


def evaluate_in_process(*args: str):
    """evaluate.py with these command-line overrides, in this process; a CompletedProcess-like result.

    What a subprocess gives a test, without the 5 s of imports per call: the task's log lines and prints in
    ``stdout`` (Hydra's console handler writes there), tqdm and warnings in ``stderr``, and an exception as
    returncode 1 with its traceback in ``stderr``, as ``python evaluate.py`` prints it. Command-line parsing
    itself is checked by the tests that still start evaluate.py (tests/test_reliability.py).
    """
    import contextlib
    import io
    import logging
    import subprocess
    import traceback

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from hydra import compose, initialize_config_dir

    from evaluate import evaluate  # registers the resolvers, as the script does

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                # Hydra stays initialised while the task runs, as under @hydra.main (a task may compose configs)
                with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"),
                                           version_base="1.3"):
                    cfg = compose(config_name="evaluate", overrides=list(args), return_hydra_config=True)
                    HydraConfig.instance().set_config(cfg)
                    with open_dict(cfg):
                        del cfg["hydra"]  # as @hydra.main hands it over
                    evaluate(cfg)
            except Exception:  # noqa: BLE001 (the test reads the exit status and the message, as from a subprocess)
                traceback.print_exc()
                code = 1
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)
    return subprocess.CompletedProcess(["evaluate.py", *args], code, out.getvalue(), err.getvalue())


def run_script(script: str, *args: str, check: bool = True):
    """Run train.py or evaluate.py at the repository root, offline; fail with its output unless ok.

    train.py runs in a subprocess; evaluate.py in this process (``evaluate_in_process``).
    """
    import os
    import subprocess
    import sys

    if script == "evaluate.py":
        proc = evaluate_in_process(*args)
        if check and proc.returncode != 0:
            raise AssertionError(f"{script} {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        return proc
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, script, *args], cwd=root, capture_output=True, text=True, timeout=600, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def signal_after_first_last_ckpt(cmd: list[str], run: Path, signum: int):
    """Start `cmd`, send `signum` a second after the run's first last.ckpt appears; (returncode, stdout, stderr)."""
    import os
    import subprocess
    import time

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err
