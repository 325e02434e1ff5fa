"""The lens family's evaluate task: the shortcut gates on an experiment's data, without training.

    python evaluate.py task=lens_gates gates.experiment=lens_b1 gates.preprocessing=raw
    python evaluate.py task=lens_gates gates.experiment=lens_b3 gates.epoch=0   # with B3's epoch-0 training masking
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from analysis.lens.gates import shortcut_gates
from analysis.metrics import gate_verdict
from rigor.jsonio import write_json


def run_gates(cfg: DictConfig) -> dict[str, Any]:
    """evaluate.py task=lens_gates: both gates on an experiment's model inputs, without training.

    The gates depend only on the model inputs (data + preprocessing + masking), not on the model, so a
    FAIL here means the data carry a shortcut before a single epoch is trained. The experiment's training
    config is composed (so its ``callbacks.shortcut_gates`` settings and its thresholds apply) and its
    datamodule is built.

    Args:
        cfg: conf/evaluate.yaml with conf/task/gates.yaml: ``gates.{experiment, preprocessing, split,
            n_samples, epoch, overrides}`` and ``out_dir``.

    Returns:
        The gate values and verdicts; also written to ``<out_dir>/gates_<experiment>_<preprocessing>_<split>.json``.
    """
    import hydra
    from hydra import compose

    experiment = cfg.gates.get("experiment")
    if not experiment:
        raise ValueError("evaluate: gates.experiment=<name> (a conf/experiment file) is required for task=lens_gates")
    overrides = [f"experiment={experiment}"]
    if cfg.gates.get("preprocessing"):
        overrides.append(f"data.preprocessing={cfg.gates.preprocessing}")
    overrides += list(cfg.gates.get("overrides") or [])
    train_cfg = compose(config_name="train", overrides=overrides)
    gate_cfg = train_cfg.callbacks.get("shortcut_gates")
    if gate_cfg is None:
        raise ValueError(f"experiment={experiment} has no callbacks.shortcut_gates config")
    datamodule = hydra.utils.instantiate(train_cfg.data)
    split = cfg.gates.get("split", "val")
    images, labels, groups = datamodule.model_inputs(split, n=cfg.gates.get("n_samples"), epoch=cfg.gates.get("epoch"), seed=int(gate_cfg.seed))
    values = shortcut_gates(images, labels, gate_cfg.core_radius, gate_cfg.radial_bins, gate_cfg.n_folds, int(gate_cfg.seed), groups)
    report: dict[str, Any] = {
        "experiment": experiment,
        "mode": train_cfg.data.mode,
        "preprocessing": train_cfg.data.preprocessing,
        "split": split,
        "masking_epoch": cfg.gates.get("epoch"),
        **values,
        "core_gate": gate_verdict(values["core_lr_auc"], gate_cfg.core_pass_below, gate_cfg.core_fail_above),
        "radial_gate": gate_verdict(values["radial_lr_auc"], gate_cfg.radial_pass_below, gate_cfg.radial_fail_above),
    }
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else Path("outputs") / "gates"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gates_{experiment}_{report['preprocessing']}_{split}.json"
    write_json(path, report)
    for key, value in report.items():
        print(f"{key:>16}: {value}")
    print(f"gates: {path}")
    return report
