"""Performance checks of the lens pipeline, as ratios against a baseline measured in the same process.

    python benchmarks/bench_lens.py                # all three, prints a markdown table
    python benchmarks/bench_lens.py --steps 20 --repeats 5

1. Lightning training step vs a plain PyTorch loop: same model, same batches, same optimizer
   (target: Lightning at most 5% slower).
2. Share of fitting time taken by the lens callbacks (gates + θ_E AUROC every 5 epochs, the final
   gates on the whole validation set, epoch timer): fit with them vs without (target: under 5%). The
   end-of-training core-sensitivity curve and temperature fit, which are evaluation rather than training,
   are timed separately against the test pass they follow.
3. Data loading (dataset + collate + augmentation + masking) throughput vs what the training step
   consumes (target: loading at least several times faster than the model, so it never starves).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
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


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=1)


def make_batches(n: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.randn(batch_size, 3, 63, 63, generator=g), "target": (torch.rand(batch_size, generator=g) > 0.5).float(),
         "index": torch.arange(batch_size)}
        for _ in range(n)
    ]


def plain_loop(batches: list[dict[str, torch.Tensor]]) -> float:
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)
    net.train()
    start = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(net(b["image"]).squeeze(-1), b["target"])
        loss.backward()
        opt.step()
    return time.perf_counter() - start


class _Clock(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module):  # after every other callback's on_fit_end (the clock is added last)
        self.seconds = time.perf_counter() - self.start


def lightning_loop(batches: list[dict[str, torch.Tensor]]) -> float:
    module = LensModule(make_net(), optimizer={"lr": 1e-4, "weight_decay": 1e-4}, scheduler=None)
    clock = _Clock()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[clock], num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return clock.seconds


def bench_step(steps: int, repeats: int, batch_size: int) -> dict[str, float]:
    batches = make_batches(steps, batch_size)
    plain_loop(batches[:2]), lightning_loop(batches[:2])  # warm-up
    ratios, plain_t, light_t = [], [], []
    for _ in range(repeats):
        a, b = lightning_loop(batches), plain_loop(batches)
        light_t.append(a), plain_t.append(b), ratios.append(a / b)
    return {"lightning_s": statistics.median(light_t), "plain_s": statistics.median(plain_t), "ratio": statistics.median(ratios)}


def lens_callbacks() -> list[L.Callback]:
    """The analysis callbacks of experiment=lens_b1 (early stopping left out: the budget is fixed here)."""
    from hydra import compose, initialize_config_dir

    from rigor.config import instantiate_callbacks, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=lens_b1", "callbacks.early_stopping=null", "seed=0"])
    return instantiate_callbacks(cfg.callbacks)


def _fit(manifest: Path, out: Path, with_callbacks: bool, epochs: int) -> tuple[float, float, float]:
    dm = LensDataModule(manifest_path=str(manifest), batch_size=128, augment={"hflip": 0.5, "vflip": 0.5, "rot90": True}, seed=0)
    module = LensModule(make_net(), optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=1e-4),
                        scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs))
    clock = _Clock()
    callbacks: list[L.Callback] = []
    sens = None
    if with_callbacks:
        # lens_b1's own callbacks (gates, strata, search metrics, core sensitivity, temperature), as a run builds them
        callbacks += lens_callbacks()
        sens = True
    callbacks.append(clock)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks, default_root_dir=str(out), num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    t0 = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    test_s = time.perf_counter() - t0
    return clock.seconds, test_s, 0.0 if sens is None else test_s


def bench_callbacks(epochs: int, n_train: int, n_val: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_toy_lens_data(Path(tmp) / "d", {"train": n_train, "val": n_val, "test": n_val})
        base_fit, base_test, _ = _fit(manifest, Path(tmp), False, epochs)
        cb_fit, cb_test, _ = _fit(manifest, Path(tmp), True, epochs)
    return {"fit_without_s": base_fit, "fit_with_s": cb_fit, "fit_share": (cb_fit - base_fit) / cb_fit,
            "test_without_s": base_test, "test_with_s": cb_test, "end_of_run_extra_over_fit": (cb_test - base_test) / cb_fit}


def bench_end_of_run(n_val: int, n_test: int) -> dict[str, float]:
    """The end-of-run phase of lens_b1 (test pass + core sensitivity, temperature, search metrics): its time
    and the images the network forwards, counted by a hook, against the images in val + test.

    The weights are a fixed random initialisation (the count and the arithmetic do not depend on training).
    """
    import hashlib
    import json

    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_toy_lens_data(Path(tmp) / "d", {"train": 128, "val": n_val, "test": n_test})
        dm = LensDataModule(manifest_path=str(manifest), batch_size=128, seed=0)
        module = LensModule(make_net(), optimizer=partial(torch.optim.AdamW, lr=1e-4))
        seen = [0]
        module.net.register_forward_hook(lambda m, args, out: seen.__setitem__(0, seen[0] + len(args[0])))
        callbacks = lens_callbacks()
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp)
        t0 = time.perf_counter()
        trainer.test(module, datamodule=dm, verbose=False)
        seconds = time.perf_counter() - t0
        summaries = {type(c).__name__: c.summary() for c in callbacks if hasattr(c, "summary")}
    digest = hashlib.sha256(json.dumps(summaries, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return {"seconds": seconds, "images": seen[0], "split_images": n_val + n_test,
            "passes": seen[0] / (n_val + n_test), "digest": digest}


def bench_loading(n_batches: int, batch_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_toy_lens_data(Path(tmp) / "d", {"train": n_batches * batch_size, "val": 16, "test": 16})
        dm = LensDataModule(manifest_path=str(manifest), batch_size=batch_size, augment={"hflip": 0.5, "vflip": 0.5, "rot90": True},
                            masking={"type": "stochastic", "radius": 5, "prob": 0.5}, seed=0)
        dm.setup()

        class _T:  # what on_after_batch_transfer needs of a trainer
            training, current_epoch = True, 0

        dm.trainer = _T()
        start = time.perf_counter()
        n = 0
        for batch in dm.train_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            n += len(batch["image"])
        load_rate = n / (time.perf_counter() - start)
    batches = make_batches(3, batch_size)
    plain_loop(batches[:1])
    step_rate = 3 * batch_size / plain_loop(batches)
    return {"loading_samples_per_s": load_rate, "model_samples_per_s": step_rate, "ratio": load_rate / step_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--only", choices=["step", "loading", "callbacks", "end_of_run"], default=None, help="run one benchmark")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.only in (None, "step"):
        step = bench_step(args.steps, args.repeats, args.batch_size)
        print(f"| Lightning step vs plain loop ({args.steps} steps x batch {args.batch_size}, median of {args.repeats}) "
              f"| {step['lightning_s']:.2f} s vs {step['plain_s']:.2f} s | ratio {step['ratio']:.3f} | target <= 1.05 |", flush=True)
    if args.only in (None, "loading"):
        load = bench_loading(8, args.batch_size)
        print(f"| Data loading vs model consumption | {load['loading_samples_per_s']:.0f} vs {load['model_samples_per_s']:.0f} samples/s "
              f"| ratio {load['ratio']:.1f} | target >> 1 |", flush=True)
    if args.only in (None, "callbacks"):
        cb = bench_callbacks(args.epochs, args.n_train, args.n_val)
        print(f"| Callbacks' share of fit ({args.epochs} epochs, {args.n_train} train / {args.n_val} val) | {cb['fit_with_s']:.1f} s with vs "
              f"{cb['fit_without_s']:.1f} s without | share {cb['fit_share']:.3f} | target < 0.05 |", flush=True)
        print(f"| End-of-run core sensitivity (val + test, 6 radii) | test pass {cb['test_with_s']:.1f} s with vs {cb['test_without_s']:.1f} s without "
              f"| extra = {cb['end_of_run_extra_over_fit']:.3f} of fit time | reported |", flush=True)
    if args.only in (None, "end_of_run"):
        eor = bench_end_of_run(args.n_val, args.n_val)
        print(f"| End-of-run phase of lens_b1 (test pass + analysis callbacks; {args.n_val} val / {args.n_val} test) "
              f"| {eor['seconds']:.1f} s, {eor['images']} images forwarded = {eor['passes']:.2f} passes over val + test "
              f"| summaries digest {eor['digest']} | reported |", flush=True)


if __name__ == "__main__":
    main()
