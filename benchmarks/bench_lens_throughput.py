"""Throughput of the lens ResNet18 (batch 128 of 3 x 63 x 63) on this machine: what the hardware allows.

    python benchmarks/bench_lens_throughput.py                 # plain loop variants + Lightning epochs
    python benchmarks/bench_lens_throughput.py --threads 1 --only plain

1. A plain PyTorch loop (the same timm ResNet18, AdamW, BCE) under each variant the field uses on CPU:
   fp32, channels_last, bfloat16 autocast (when the CPU has native bf16), both, and torch.compile.
   Training and evaluation images/s, and how far each variant's logits move from fp32 on the same
   weights and inputs (max |delta logit| and the share of decisions at logit 0 that flip): float noise
   (~1e-5) or not.
2. Lightning epochs of the real LensDataModule and LensModule (augmentation, metrics, per-sample outputs)
   on toy cutouts of the same size, fp32 and the fastest variant: training and validation images/s,
   against the plain loop of the same variant measured just before and just after each fit.

Rates are images per second of this process's CPU time (time.process_time): with one thread that is
the work itself, and it stays put when other jobs share the cores, where wall-clock rates swing with
the load. All figures are medians over interleaved repeats in one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import timm
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.lens.datamodule import LensDataModule  # noqa: E402
from lightning_modules.lens.module import LensModule  # noqa: E402
from tests.helpers import write_toy_lens_data  # noqa: E402

BATCH, SIZE = 128, 63


def cpu_has_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def make_net(channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=1)
    return net.to(memory_format=torch.channels_last) if channels_last else net


class PlainVariant:
    """One variant of the plain loop: its net, optimizer and batch, measured in interleaved rounds.

    Args:
        channels_last: NHWC memory layout for the net and the batch.
        bf16: bfloat16 autocast around forward and loss.
        compile_: torch.compile the net (the first calls compile it).
        x_eval: Inputs whose eval logits (before any training step) are compared across variants.
    """

    def __init__(self, channels_last: bool, bf16: bool, compile_: bool, x_eval: torch.Tensor) -> None:
        self.net = make_net(channels_last)
        self.fwd: Callable = torch.compile(self.net) if compile_ else self.net
        self.bf16, self.channels_last = bf16, channels_last
        gen = torch.Generator().manual_seed(1)
        self.x = self._layout(torch.randn(BATCH, 3, SIZE, SIZE, generator=gen))
        self.y = torch.randint(0, 2, (BATCH,), generator=gen).float()
        self.net.eval()
        with torch.no_grad(), self._autocast():
            self.logits = self.fwd(self._layout(x_eval)).float().squeeze(-1)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4)
        self.train_rates: list[float] = []
        self.eval_rates: list[float] = []
        t = time.perf_counter()
        self.measure(1)  # warm-up (and compilation), not recorded
        self.train_rates.clear()
        self.eval_rates.clear()
        self.warmup_s = time.perf_counter() - t

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def measure(self, steps: int) -> None:
        """One round: `steps` training steps, then `steps` evaluation batches; images/s of each."""
        self.net.train()
        t = time.process_time()
        for _ in range(steps):
            with self._autocast():
                loss = F.binary_cross_entropy_with_logits(self.fwd(self.x).float().squeeze(-1), self.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.train_rates.append(steps * BATCH / (time.process_time() - t))
        self.net.eval()
        t = time.process_time()
        with torch.inference_mode(), self._autocast():
            for _ in range(steps):
                self.fwd(self.x)
        self.eval_rates.append(steps * BATCH / (time.process_time() - t))


class _PhaseClock(L.Callback):
    """CPU seconds of this process spent in training and in validation phases, summed over epochs."""

    def __init__(self) -> None:
        self.train_s = self.val_s = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t, self._val_in_epoch = time.process_time(), 0.0

    def on_train_epoch_end(self, trainer, pl_module):
        # Lightning validates inside the training epoch (before on_train_epoch_end): take that out
        self.train_s += time.process_time() - self._t - self._val_in_epoch

    def on_validation_epoch_start(self, trainer, pl_module):
        self._v = time.process_time()

    def on_validation_epoch_end(self, trainer, pl_module):
        spent = time.process_time() - self._v
        self.val_s += spent
        self._val_in_epoch += spent


def lightning_epochs(manifest: Path, n_train: int, n_val: int, epochs: int, precision: str, channels_last: bool) -> dict[str, float]:
    dm = LensDataModule(manifest_path=str(manifest), batch_size=BATCH, augment={"hflip": 0.5, "vflip": 0.5, "rot90": True}, seed=0)
    module = LensModule(make_net(False), optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=1e-4), channels_last=channels_last)
    clock = _PhaseClock()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock], num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return {"train_img_s": epochs * n_train / clock.train_s, "eval_img_s": epochs * n_val / clock.val_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: as the plan's runs)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--n-val", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first compile takes minutes)")
    parser.add_argument("--only", choices=["plain", "lightning"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bf16 = cpu_has_bf16()
    print(f"threads {args.threads}, native bf16: {bf16}, torch {torch.__version__}")
    x_eval = torch.randn(512, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    variants = [("fp32", False, False, False), ("channels_last", True, False, False)]
    if bf16:
        variants += [("bf16 autocast", False, True, False), ("bf16 + channels_last", True, True, False)]
    if not args.no_compile:
        variants += [("torch.compile", False, False, True)]
    if args.only in (None, "plain"):
        built = {name: PlainVariant(cl, b16, comp, x_eval) for name, cl, b16, comp in variants}
        for _ in range(args.repeats):  # interleaved rounds: a load change on a shared machine hits every variant
            for v in built.values():
                v.measure(args.steps)
        ref = built["fp32"]
        ref_train, ref_eval = statistics.median(ref.train_rates), statistics.median(ref.eval_rates)
        print("| variant | train img/s | eval img/s | train x fp32 | eval x fp32 | max abs delta logit | decisions flipped | warm-up s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, v in built.items():
            tr, ev = statistics.median(v.train_rates), statistics.median(v.eval_rates)
            drift = (v.logits - ref.logits).abs().max().item()
            flips = ((v.logits > 0) != (ref.logits > 0)).float().mean().item()
            print(f"| {name} | {tr:.0f} | {ev:.0f} | {tr / ref_train:.2f} | {ev / ref_eval:.2f} | {drift:.1e} | {flips:.4f} "
                  f"| {v.warmup_s:.0f} |", flush=True)
    if args.only in (None, "lightning"):
        # each Lightning fit sits between two plain-loop rounds of the same variant, so both see the same load
        with tempfile.TemporaryDirectory() as tmp:
            manifest = write_toy_lens_data(Path(tmp) / "d", {"train": args.n_train, "val": args.n_val, "test": 16}, size=SIZE)
            print(f"\n| {args.epochs} epochs of {args.n_train} train / {args.n_val} val | Lightning train img/s | plain train img/s "
                  f"| ratio | Lightning val img/s | plain eval img/s | ratio |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            runs = [("32-true", False)] + ([("bf16-mixed", True)] if bf16 else [])
            for precision, cl in runs:
                plain_v = PlainVariant(cl, precision == "bf16-mixed", False, x_eval)
                plain_v.measure(args.steps)
                r = lightning_epochs(manifest, args.n_train, args.n_val, args.epochs, precision, cl)
                plain_v.measure(args.steps)
                pt, pe = statistics.mean(plain_v.train_rates), statistics.mean(plain_v.eval_rates)
                print(f"| precision={precision}, channels_last={cl} | {r['train_img_s']:.0f} | {pt:.0f} | {r['train_img_s'] / pt:.2f} "
                      f"| {r['eval_img_s']:.0f} | {pe:.0f} | {r['eval_img_s'] / pe:.2f} |", flush=True)


if __name__ == "__main__":
    main()
