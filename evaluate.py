"""Evaluate runs: one task per call, each a config file conf/task/<name>.yaml with a `_target_` function.

    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt split=test        # task=predict (default)
    python evaluate.py task=calibrate fit=<run>/predictions_val.csv apply=<run>/predictions_test.csv
    python evaluate.py task=compare a=<run A>/predictions_test.csv b=<run B>/predictions_test.csv
    python evaluate.py task=summarize sweep_dir=multirun/<experiment>/<sweep>
    python evaluate.py task=lens_gates gates.experiment=lens_b1 gates.preprocessing=raw   # lens shortcut gates

A family adds a task by adding a file under conf/task/ (``# @package _global_``, ``task._target_`` set to
a function ``fn(cfg) -> dict``, plus the task's own options); nothing here changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from rigor.config import register_resolvers

register_resolvers()

TASK_DIR = Path(__file__).resolve().parent / "conf" / "task"


def available_tasks() -> list[str]:
    """The task names evaluate.py knows: the files conf/task/*.yaml."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the function named by ``cfg.task._target_`` on the whole config."""
    task = cfg.get("task")
    target = task.get("_target_") if isinstance(task, DictConfig) else None
    if not target:
        raise ValueError(
            f"evaluate: task={task!r} is not a task config with a _target_; choose task=<name> from "
            f"{available_tasks()} (files in {TASK_DIR})"
        )
    try:
        fn = hydra.utils.get_method(target)
    except Exception as err:  # an import error inside the task's module shows up here too
        raise ValueError(f"evaluate: task._target_={target!r} cannot be loaded ({err}); tasks: {available_tasks()}") from err
    return fn(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
