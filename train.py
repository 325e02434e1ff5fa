"""Train one run (or, with -m, a sweep of runs) from the Hydra config in conf/train.yaml.

    python train.py                                   # the quick default lens experiment on CPU
    python train.py experiment=lens_b3 seed=123       # one run of the seed's B3 arm
    python train.py -m experiment=lens_b3 seed=42,123,456

Flow: config -> datamodule, module, callbacks, loggers, trainer -> fit -> test on the best checkpoint
-> metrics.json. A run started again in a directory that holds checkpoints/last.ckpt resumes from it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from callbacks.base import summary_dir
from rigor.config import instantiate_callbacks, instantiate_loggers, register_resolvers
from rigor.jsonio import to_jsonable, write_json

log = logging.getLogger("rigor.train")
register_resolvers()


def best_score(checkpoint: ModelCheckpoint, best: dict[str, Any]) -> Any:
    """The monitored value of the best checkpoint (from the file when fitting ran in spawned processes)."""
    if checkpoint.best_model_score is not None:
        return checkpoint.best_model_score
    for state in best.get("callbacks", {}).values():
        if isinstance(state, dict) and state.get("best_model_score") is not None:
            return state["best_model_score"]
    return None


def merge_summaries(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Add every callback summary to `metrics`; a key given by two summaries (or by the run) is an error."""
    owner: dict[str, str] = {k: "train.py" for k in metrics}
    for path in sorted(summary_dir(run_dir).glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            if key in owner:
                raise ValueError(f"metrics.json key {key!r} is given by both {owner[key]} and callback {path.stem!r}; "
                                 "rename one of them so neither result is silently lost")
            owner[key] = f"callback {path.stem!r}"
            metrics[key] = value


def run_dir_of(cfg: DictConfig) -> Path:
    """The run's output directory (Hydra's, or paths.output_dir when composed without Hydra)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test on the best checkpoint and write metrics.json. Returns the metrics.

    Args:
        cfg: The composed config (conf/train.yaml).
    """
    start = time.time()
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    shutil.rmtree(summary_dir(run_dir), ignore_errors=True)  # a resumed run recomputes them
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    L.seed_everything(cfg.seed, workers=True)

    log.info("datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("module <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    callbacks.append(
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=model.monitor,
            mode=model.mode,
            save_last=True,
            save_top_k=1,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
    )
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))

    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    resume = cfg.get("ckpt_path")
    last = ckpt_dir / "last.ckpt"
    if resume is None and last.exists():
        log.warning("found %s: resuming that run", last)
        resume = str(last)

    metrics: dict[str, Any] = {"experiment": cfg.experiment_name, "seed": cfg.seed, "run_dir": str(run_dir)}
    if cfg.get("train", True):
        # our own checkpoints hold the config (OmegaConf objects), so they are loaded with weights_only=False
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_path:
            best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True, mmap=True)
            metrics[f"best_{model.monitor.replace('/', '_')}"] = to_jsonable(best_score(checkpoint, best))
            metrics["best_epoch"] = int(best["epoch"])
        metrics["epochs_trained"] = int(trainer.current_epoch)
        if getattr(model, "effective_lr", None) is not None:
            metrics["lr"] = model.effective_lr  # after the linear scaling rule, when it is on
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                metrics[f"last_{key.replace('/', '_')}"] = to_jsonable(value)

    if cfg.get("test", True):
        best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True)
        for key, value in (results[0] if results else {}).items():
            metrics[key.replace("/", "_")] = to_jsonable(value)

    merge_summaries(run_dir, metrics)
    metrics["wall_time_s"] = round(time.time() - start, 2)
    metrics["status"] = "completed"
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        for logger in loggers:
            logger.log_metrics({f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
        log.info("metrics: %s", run_dir / "metrics.json")
        print(f"metrics.json: {run_dir / 'metrics.json'}")
    return metrics


def close_loggers() -> None:
    """Finish the W&B run so the next job of a one-process sweep starts a new one."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = run_dir_of(cfg)
    try:
        metrics = train(cfg)
    except BaseException as err:
        run_dir.mkdir(parents=True, exist_ok=True)
        failure = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        write_json(run_dir / "failure.json", failure)
        raise
    finally:
        close_loggers()
    # the metric a sweeper optimises: optimized_metric, else the best value of the module's monitor
    name = cfg.get("optimized_metric") or next((k for k in metrics if k.startswith("best_") and k != "best_epoch"), "")
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else None


if __name__ == "__main__":
    main()
