"""SearchPruning: a search trial reports its objective each epoch to the study and stops when the pruner says so.

Every trial of ``hparams_search=<name>`` gets this callback (rigor/search.py adds it to the trial's
overrides). In the job's process it finds the study through the job's own Hydra config (the sweep
directory, ``hydra.sweeper.storage`` and ``study_name``) and its trial through the job number, builds the
pruner from ``hydra.sweeper.pruner``, and after each validation reports the epoch's value of the metric
``optimized_metric`` summarises (``best_val_auroc`` -> ``val/auroc``; null: the module's monitor). When the
pruner prunes, the run stops at the end of the epoch (``trainer.should_stop``: checkpoints and
metrics.json are written as for any run), metrics.json gets ``pruned: true`` and ``pruned_epoch``, and
train.py records the job as ``pruned`` in the sweep ledger; the sweeper tells the study PRUNED.

Outside a search (no search sweeper, no pruner, no RUNNING trial for this job: the fresh-seed runs) it does
nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from callbacks.base import summary_dir
from rigor.jsonio import write_json

log = logging.getLogger(__name__)


class SearchPruning(Callback):
    """Reports the objective per epoch to the job's Optuna trial; stops the run when the trial is pruned.

    Args:
        optimized_metric: The run's ``optimized_metric`` (the sweeper passes ``${optimized_metric}``); None:
            the module's monitor.
    """

    def __init__(self, optimized_metric: str | None = None) -> None:
        self.optimized_metric = optimized_metric
        self.trial: Any = None
        self.metric: str | None = None
        self._looked = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not self._looked:
            self._looked = True
            self._find_trial(pl_module)

    def _find_trial(self, pl_module: L.LightningModule) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from rigor.search import epoch_metric, is_search, load_study, running_trial_of_job

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        hydra_cfg = HydraConfig.get()
        sweeper = hydra_cfg.sweeper
        if not is_search(sweeper) or sweeper.get("pruner") is None or hydra_cfg.job.get("num") is None:
            return
        import hydra.utils
        import optuna

        study = load_study(hydra_cfg.sweep.dir, sweeper, pruner=hydra.utils.instantiate(sweeper.pruner))
        frozen = running_trial_of_job(study, int(hydra_cfg.job.num))
        if frozen is None:  # a fresh-seed run of the chosen configuration, or a trial told already
            return
        self.trial = optuna.trial.Trial(study, frozen._trial_id)
        self.metric = epoch_metric(self.optimized_metric, str(pl_module.monitor))
        log.info("search trial %d (job %s): reporting %s each epoch to the pruner %s", frozen.number, hydra_cfg.job.num,
                 self.metric, sweeper.pruner.get("_target_"))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            raise KeyError(f"optimized_metric: the pruner needs {self.metric} each epoch, but the module logged only "
                           f"{sorted(trainer.callback_metrics)}")
        epoch = int(trainer.current_epoch)
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            log.warning("search trial %d pruned after epoch %d (%s = %.4g): the run stops at the end of this epoch",
                        self.trial.number, epoch, self.metric, float(value))
            write_json(summary_dir(Path(trainer.default_root_dir)) / "search_pruning.json",
                       {"pruned": True, "pruned_epoch": epoch})
            trainer.should_stop = True
            self.trial = None  # nothing more to report after the decision
