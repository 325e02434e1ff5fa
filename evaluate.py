"""Evaluate runs: predictions from a checkpoint, calibration, paired comparisons, sweep summaries.

    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt split=test        # task=predict
    python evaluate.py task=calibrate fit=<run>/predictions_val.csv apply=<run>/predictions_test.csv
    python evaluate.py task=compare a=<run A>/predictions_test.csv b=<run B>/predictions_test.csv
    python evaluate.py task=summarize sweep_dir=multirun/<experiment>/<sweep>
    python evaluate.py task=gates gates.experiment=lens_b1 gates.preprocessing=raw       # shortcut gates, no training

See conf/evaluate.yaml for every option.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from rigor.config import register_resolvers

register_resolvers()

TASKS = ("predict", "calibrate", "compare", "summarize", "gates")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the task named by ``cfg.task``."""
    task = cfg.get("task")
    if task == "predict":
        from rigor.predict import run_predict

        return run_predict(cfg)
    if task == "gates":
        from rigor.gates_task import run_gates

        return run_gates(cfg)
    from rigor import evaluation

    runners = {"calibrate": evaluation.run_calibrate, "compare": evaluation.run_compare, "summarize": evaluation.run_summarize}
    if task not in runners:
        raise ValueError(f"task={task!r}: expected one of {list(TASKS)}")
    return runners[task](cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
