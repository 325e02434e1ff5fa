"""Core-sensitivity curve (seed 004 section 5.5): AUROC as the central disc is masked at growing radii."""

from __future__ import annotations

from typing import Any

import lightning as L

from analysis.metrics import gate_verdict
from analysis.lens.images import apply_core_mask
from analysis.metrics import auroc
from callbacks.base import RigorCallback, SplitOutputs, run_split, split_outputs


def sensitivity_curve(
    pl_module: L.LightningModule, loader: Any, radii: list[float], fill: float, unmasked: SplitOutputs | None = None
) -> dict[float, float]:
    """AUROC of the model on every batch of `loader` with the core masked at each radius (one pass).

    Args:
        unmasked: The split's plain outputs when already computed (the test pass, the shared validation
            pass): r = 0 is then read from them instead of being forwarded again.
    """
    # the lens family's input is "image"; masking happens on the batch, before the module's forward
    masked = [r for r in radii if not (r == 0 and unmasked is not None)]
    transforms = {r: (lambda b, r=r: {**b, "image": apply_core_mask(b["image"], r, fill)}) for r in masked}
    curve = {}
    if transforms:
        result = run_split(pl_module, loader, transforms)
        curve = {r: auroc(result.target.astype(int), result.outputs[r]) for r in masked}
    if unmasked is not None and 0.0 in radii:
        curve[0.0] = auroc(unmasked.target.astype(int), unmasked.outputs)
    return {r: curve[r] for r in radii}


class CoreSensitivity(RigorCallback):
    """Runs after testing (on the best checkpoint) for the validation and test splits.

    ``core_reliance = AUROC(r=0) - AUROC(r=reliance_radius)``, with a seed 6.2 PASS/WARN/FAIL verdict.

    Args:
        radii: Mask radii in pixels (0 = no mask).
        reliance_radius: Radius whose drop defines core_reliance.
        splits: Splits to evaluate ("val" gives core_sensitivity_*, "test" test_core_sensitivity_*).
        fill: Value of masked pixels.
        reliance_pass_below, reliance_fail_above: Verdict thresholds (required, from conf/thresholds/lens.yaml).
    """

    def __init__(
        self,
        radii: list[float] = (0, 3, 5, 7, 10, 15),
        reliance_radius: float = 7,
        splits: list[str] = ("val", "test"),
        fill: float = 0.0,
        *,
        reliance_pass_below: float,
        reliance_fail_above: float,
    ) -> None:
        self.radii = [float(r) for r in radii]
        if 0.0 not in self.radii or float(reliance_radius) not in self.radii:
            raise ValueError(f"callbacks.core_sensitivity.radii must contain 0 and reliance_radius={reliance_radius}, got {self.radii}")
        self.reliance_radius = float(reliance_radius)
        self.splits = list(splits)
        self.fill = fill
        self.thresholds = (reliance_pass_below, reliance_fail_above)
        self.curves: dict[str, dict[float, float]] = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        for split in self.splits:
            unmasked = split_outputs(trainer, pl_module, split)  # r = 0: the test pass itself, or the shared val pass
            self.curves[split] = sensitivity_curve(pl_module, dm.split_dataloader(split), self.radii, self.fill, unmasked)
        self._plot(trainer)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split, curve in self.curves.items():
            prefix = "" if split == "val" else f"{split}_"
            for r, v in curve.items():
                out[f"{prefix}core_sensitivity_r{r:g}"] = v
            reliance = curve[0.0] - curve[self.reliance_radius]
            out[f"{prefix}core_reliance"] = reliance
            out[f"{prefix}core_reliance_verdict"] = gate_verdict(reliance, *self.thresholds)
        return out

    def _plot(self, trainer: L.Trainer) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for split, curve in self.curves.items():
            ax.plot(list(curve), list(curve.values()), "o-", label=split)
        ax.axvline(self.reliance_radius, color="grey", ls=":", lw=1)
        ax.set(xlabel="core mask radius (pixels)", ylabel="AUROC", title="Core sensitivity (best checkpoint)")
        ax.legend()
        self.save_figure(trainer, fig, "core_sensitivity")
