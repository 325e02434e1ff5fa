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
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any
from warnings import filterwarnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rigor.config import compose_sweeps_with_their_first_experiment, instantiate_callbacks, instantiate_loggers, register_resolvers
from rigor.guard import ResumeConfigError, TermHandler, Terminated, check_resume, check_splits, relevant_config, safe_load
from rigor.jsonio import to_jsonable, write_json
from rigor.launchers import sweep_value
from rigor.ledger import Ledger, job_fields, now, this_process
from rigor.sweeps import completed_metrics

# Lightning and torch (seconds to import) are imported where a run starts: a bad override, a refused sweep and
# a sweep's launching process (Ray, submitit, SLURM: its jobs train elsewhere) never pay for them
if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("rigor.train")
register_resolvers()
# conf/hydra/launcher/ray.yaml deliberately shadows the plugin's config of the same name
filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")


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
    from callbacks.base import summary_dir

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


def own_the_run_config(run_dir: Path) -> None:
    """Make this start's config the run's ``.hydra/`` when this start trains the run from scratch.

    Hydra saves a later start's config under ``.hydra/restarts/<time>/`` (rigor.config's ``hydra_subdir``),
    so a resumed run keeps its first start's. A start that died before its first last.ckpt left nothing a
    later start resumes, though: the later start trains fresh, its checkpoints are trained under its own
    config, and that is the one evaluate.py and the summary must read. Its files move to ``.hydra/``; the
    dead start's move to ``.hydra/restarts/<their time>-no-checkpoint/``. Call only when no last.ckpt exists.
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if not HydraConfig.initialized() or rank_zero_only.rank != 0:
        return
    # (None where it does not resolve: a config composed in-process by the tests, whose root Hydra dropped)
    subdir = OmegaConf.select(HydraConfig.get(), "output_subdir", throw_on_resolution_failure=False)
    first = run_dir / ".hydra"
    this = run_dir / subdir if subdir else None
    if this is None or this.resolve() == first.resolve() or not (this / "config.yaml").is_file():
        return
    from datetime import datetime

    dead_time = datetime.fromtimestamp((first / "config.yaml").stat().st_mtime) if (first / "config.yaml").exists() else datetime.now()
    dead = first / "restarts" / f"{dead_time:%Y-%m-%d_%H-%M-%S-%f}-no-checkpoint"
    dead.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        if (first / name).exists():
            os.replace(first / name, dead / name)
        if (this / name).exists():
            os.replace(this / name, first / name)
    shutil.rmtree(this, ignore_errors=True)
    log.warning("%s held the config of a start that left no checkpoint: replaced by this start's (the old one is in %s)",
                first / "config.yaml", dead)


def load_initial_weights(model: L.LightningModule, path: str | Path) -> None:
    """``init_from=<ckpt>``: another run's weights as this run's start (not its optimizer, epoch or schedule).

    Raises:
        ValueError: The file holds no ``state_dict``, or its tensors do not fit the module (Lightning's message
            names the missing and unexpected keys).
    """
    weights = safe_load(path).get("state_dict")
    if not isinstance(weights, dict):
        raise ValueError(f"init_from={path}: no state_dict in the file (a Lightning checkpoint holds one)")
    try:
        model.load_state_dict(weights, strict=bool(getattr(model, "strict_loading", True)))
    except RuntimeError as err:
        raise ValueError(f"init_from={path}: its weights do not fit {type(model).__name__}: {err}") from None
    log.info("init_from: weights from %s (fresh optimizer, schedule and epoch count)", path)


def device_info(trainer: L.Trainer) -> dict[str, Any]:
    """Where the run ran: accelerator, CUDA_VISIBLE_DEVICES as this process saw it, torch threads, host,
    and its niceness (a job at a lower priority than its neighbours runs slower on a shared machine)."""
    import torch

    return {"accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_threads": torch.get_num_threads(), "hostname": socket.gethostname(), "niceness": os.nice(0)}


def train(cfg: DictConfig, term: TermHandler | None = None) -> dict[str, Any]:
    """Fit, test on the best checkpoint and write metrics.json. Returns the metrics.

    Args:
        cfg: The composed config (conf/train.yaml).
        term: The SIGTERM recorder main() installs (None: SIGTERM is not watched).
    """
    start = time.time()
    term = term or TermHandler()
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    try:
        seed = int(cfg.seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}") from None
    if cfg.get("train", True) and int(cfg.trainer.get("max_epochs") or 0) < 1:
        raise ValueError(f"trainer.max_epochs={cfg.trainer.get('max_epochs')}: nothing would be trained; set it to 1 or more "
                         "(or train=false to test a checkpoint)")
    stamp = relevant_config(cfg)
    resume, init_from = cfg.get("ckpt_path"), cfg.get("init_from")
    if resume is not None and init_from is not None:
        raise ValueError(f"ckpt_path={resume} and init_from={init_from}: give one; ckpt_path resumes a run (same config), "
                         "init_from starts a new run from another run's weights")
    if resume is not None and cfg.get("train", True):
        # an explicit checkpoint is resumed under the same guard as this directory's last.ckpt
        try:
            check_resume(stamp, Path(resume), bool(cfg.get("resume_force", False)))
        except ResumeConfigError as err:
            raise ResumeConfigError(f"ckpt_path: {err}\nTo train a new run from its weights (fresh optimizer, schedule and "
                                    f"epoch count), give init_from={resume} instead of ckpt_path.") from None
    elif resume is not None:
        safe_load(resume)  # train=false tests it: refuses a file that would run code before Lightning touches it
    elif last.exists():
        check_resume(stamp, last, bool(cfg.get("resume_force", False)))
        done = completed_metrics(run_dir)
        if done is not None:
            print(f"already completed (same config): {run_dir / 'metrics.json'}; delete it to run the tests again")
            return done
        log.warning("found %s: resuming that run", last)
        resume = str(last)
    # Lightning and the model's module only now: a bad setting, a refused resume or a completed run stop above
    # without them (seconds of CPU per start); ${model_monitor:...} reads the class's source, not the class
    import lightning as L
    import torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from callbacks.base import summary_dir
    from callbacks.run_checkpoint import LAST_VAL_KEY, ConfigStamp, RunCheckpoint
    from callbacks.step_seed import StepSeed

    if not last.exists():
        own_the_run_config(run_dir)  # this start's checkpoints will be the run's: so is its config
    shutil.rmtree(summary_dir(run_dir), ignore_errors=True)  # a resumed run recomputes them
    if cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    L.seed_everything(seed, workers=True)

    log.info("datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("module <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    if init_from is not None and resume is None:  # (a restart of such a run resumes its own last.ckpt)
        load_initial_weights(model, init_from)
    datamodule.setup("fit")
    used = (["train", "val"] if cfg.get("train", True) else []) + (["test"] if cfg.get("test", True) else [])
    warnings = check_splits(datamodule, model.output_kind, used, getattr(datamodule, "size_keys", "the data config (data.*)"))
    term.check("set-up", last)

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    # best.ckpt follows the monitor; last.ckpt is written at the end of every epoch, whatever the monitor did
    callbacks += [
        RunCheckpoint(dirpath=ckpt_dir, filename="best", monitor=model.monitor, mode=model.mode, save_top_k=1,
                      enable_version_counter=False, auto_insert_metric_name=False),
        # (Lightning's save_last writes only when another checkpoint was saved in the same step)
        RunCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                      enable_version_counter=False),
        ConfigStamp(stamp),
        StepSeed(seed),  # dropout draws depend on (seed, epoch, batch) only: a resumed run ends the same
    ]
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer_cfg = cfg.trainer
    if trainer_cfg.get("sync_batchnorm") and trainer_cfg.get("accelerator") == "cpu":
        log.info("trainer.sync_batchnorm is for GPUs; off on CPU")
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"sync_batchnorm": False})
    trainer: L.Trainer = hydra.utils.instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))

    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, Any] = {"experiment": cfg.experiment_name, "seed": seed, "run_dir": str(run_dir)}
    if init_from is not None:
        metrics["init_from"] = str(init_from)
    # Lightning's wiring check: a few batches of each loop, no checkpoints, no loggers; the numbers are not results
    fast_dev_run = trainer.fast_dev_run
    if fast_dev_run:
        metrics["fast_dev_run"] = fast_dev_run
    best_path = ckpt_dir / "best.ckpt"  # this directory's, even when the run directory was moved
    if cfg.get("train", True):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        except SIGTERMException:
            pass
        term.check("training", last)
        if best_path.exists():
            best = safe_load(best_path)
            metrics[f"best_{model.monitor.replace('/', '_')}"] = to_jsonable(best_score(trainer.checkpoint_callback, best))
            metrics["best_epoch"] = int(best["epoch"])
        # from last.ckpt: under ddp_spawn the trainer in this process never sees the epochs run in its children
        metrics["epochs_trained"] = int(safe_load(last)["epoch"]) + 1 if not fast_dev_run else trainer.current_epoch
        if getattr(model, "effective_lr", None) is not None:
            metrics["lr"] = model.effective_lr  # after the linear scaling rule, when it is on
        last_val = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not last_val and resume is not None and not fast_dev_run:
            # this start had no epoch left (stopped after the final epoch's last.ckpt): that epoch's, from the file
            last_val = safe_load(resume).get(LAST_VAL_KEY, {})
        for key, value in last_val.items():
            metrics[f"last_{key.replace('/', '_')}"] = to_jsonable(value)

    if cfg.get("test", True):
        ckpt = str(best_path) if best_path.exists() else cfg.get("ckpt_path")  # fast_dev_run: neither, the weights in memory
        try:
            results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        except SIGTERMException:
            results = []
        term.check("testing", last)
        for key, value in (results[0] if results else {}).items():
            metrics[key.replace("/", "_")] = to_jsonable(value)

    merge_summaries(run_dir, metrics)
    if warnings:
        metrics["warnings"] = warnings
    metrics["device"] = device_info(trainer)
    metrics["wall_time_s"] = round(time.time() - start, 2)
    # a fast_dev_run is not a completed run: train.py, a resumed sweep and the summary never take it for one
    metrics["status"] = "fast_dev_run" if fast_dev_run else "completed"
    term.check("the end-of-run analyses", last)
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        for logger in loggers:
            logger.log_metrics({f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
        log.info("metrics: %s", run_dir / "metrics.json")
        print(f"metrics.json: {run_dir / 'metrics.json'}")
        if fast_dev_run:
            print(f"fast_dev_run={fast_dev_run}: the wiring works (set-up, training, validation, testing, callbacks); "
                  "no checkpoints were written and its numbers are not results")
    return metrics


def close_loggers() -> None:
    """Finish the W&B run so the next job of a one-process sweep starts a new one."""
    wandb = sys.modules.get("wandb")  # not imported: no W&B run to finish (and no second of importing it)
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def sweep_job() -> tuple[Ledger, int] | None:
    """The sweep's ledger and this job's number when this run is a job of a sweep (-m), else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.job.get("num") is None:
        return None
    return Ledger(hydra_cfg.sweep.dir), int(hydra_cfg.job.num)


def _record(job: tuple[Ledger, int] | None, **fields: Any) -> None:
    """Update this job's ledger row; a ledger that cannot be written costs a warning, never the run."""
    if job is None:
        return
    try:
        job[0].update(job[1], **fields)
    except OSError as err:
        log.warning("could not update the sweep ledger %s: %s", job[0].table_path, err)


def _first_line(err: BaseException) -> str:
    text = next((line for line in str(err).strip().splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {text}"[:500]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = run_dir_of(cfg)
    job = sweep_job()
    # a completed run started again keeps its ledger row as it was (a resumed sweep does not launch it)
    record = job is not None and completed_metrics(run_dir) is None
    if record:
        _record(job, state="running", start=now(), **this_process(), **job_fields(HydraConfig.get().overrides.task, run_dir))
    term = TermHandler().install()
    try:
        metrics = train(cfg, term)
    except ResumeConfigError as err:
        _record(job, state="failed", end=now(), exit_reason=f"refused by the resume guard: {_first_line(err)}")
        raise  # the directory belongs to an earlier run: leave it as it is
    except BaseException as err:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not isinstance(err, Terminated) and term.received == "SIGINT":
            # a second Ctrl-C stops at once (KeyboardInterrupt, or Lightning's exit after catching it)
            try:
                term.check("the run", run_dir / "checkpoints" / "last.ckpt")
            except Terminated as stopped:
                err = stopped
        status = err.status if isinstance(err, Terminated) else "failed"
        failure = {"status": status, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        write_json(run_dir / "failure.json", failure)
        _record(job, state=status, end=now(), exit_reason=_first_line(err))
        if isinstance(err, Terminated):
            log.error("%s", err)
            sys.exit(err.exit_code)  # non-zero (143 SIGTERM, 130 Ctrl-C): a scheduler requeues it, a sweep stops here
        raise
    finally:
        term.uninstall()
        close_loggers()
    if record:
        # a search trial its pruner stopped (callbacks/pruning.py): finished, not failed
        pruned = f"pruned after epoch {metrics.get('pruned_epoch')}" if metrics.get("pruned") else ""
        _record(job, state="pruned" if pruned else "completed", end=now(), exit_reason=pruned)
    return sweep_value(cfg, metrics)


if __name__ == "__main__":
    compose_sweeps_with_their_first_experiment()
    main()
