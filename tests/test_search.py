"""Hyperparameter search (rigor/search.py, docs/sweeps.md "Hyperparameter search") on the toy family.

End to end through train.py -m: a search whose sweep process is SIGKILLed mid-trial and then continued by
the same command to its total (no job number reused, the killed trial resumed from its last.ckpt), the
fresh-seed runs, summary and plots; a changed space and a test objective refused before anything runs;
a pruner that prunes every trial after epoch 0. Two trials at once through Ray (a finished one's slot going to
the next trial while a slow one still runs) is in tests/test_ray_launcher.py, on that module's Ray cluster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback

pytest.importorskip("optuna")  # the search extra (the test extra includes it)

from rigor.ledger import Ledger  # noqa: E402
from rigor.search import SearchConfigError, check_objective, epoch_metric, search_space, space_changes  # noqa: E402
from tests.test_sweeps import chaos, run_train, tiny  # noqa: E402

pytestmark = pytest.mark.slow


def search(sweep: Path, *extra: str) -> list[str]:
    """A toy search (tests/toy_family/conf/hparams_search/toy.yaml: 3 trials) of 2-epoch runs into `sweep`."""
    return ["hparams_search=toy", *[a for a in tiny() if not a.startswith("trainer.max_epochs=")], "trainer.max_epochs=2",
            f"hydra.sweep.dir={sweep}", *extra]


def study(sweep: Path):
    from rigor.search import load_study

    return load_study(sweep, {"study_name": "search", "storage": "journal"})


class SlowJob(Callback):
    """Test-only: job `job` of a sweep, when fitting starts, waits until job `until_job` has started (at most
    `seconds`); every job marks its start in `marker_dir`.

    Waiting for an event rather than for a fixed time keeps the test independent of the machine's load: a
    sweeper that frees a finished trial's slot starts `until_job` while `job` waits; one that waits for the
    whole batch cannot, so `job` ends first, after `seconds`, and the test fails.
    """

    def __init__(self, job: int, seconds: float, marker_dir: str, until_job: int = 2) -> None:
        self.job, self.seconds, self.until_job, self.marker_dir = job, seconds, until_job, Path(marker_dir)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        num = HydraConfig.get().job.get("num")
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        (self.marker_dir / f"started_{num}").touch()
        if num == self.job:
            end = time.monotonic() + self.seconds
            while not (self.marker_dir / f"started_{self.until_job}").exists() and time.monotonic() < end:
                time.sleep(0.2)
            time.sleep(2.0)  # the ledger's times are whole seconds: end visibly after the other job's start


# --- no training --------------------------------------------------------------------------------------


def test_space_objective_and_changes_without_training():
    space, fixed = search_space({"model.optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "model": {"hidden": "range(8, 33, 8)"},
                                 "data.batch_size": "choice(32, 64)", "model.dropout": 0.1})
    assert space["model.optimizer.lr"].log and space["model.hidden"].high == 32 and space["model.hidden"].step == 8
    assert space["data.batch_size"].choices == (32, 64) and fixed == ["model.dropout=0.1"]
    for name in ("test_auroc", "test/auroc", "best_test_auroc", "train_loss"):
        with pytest.raises(SearchConfigError, match=f"optimized_metric={name}"):
            check_objective(name)
    check_objective("best_val_auroc")
    assert epoch_metric("best_val_auroc", "val/loss") == "val/auroc" and epoch_metric(None, "val/loss") == "val/loss"
    assert space_changes({"space": {"a": 1, "b": 2}}, {"space": {"a": 1, "b": 3}}) == ["  space.b: 2 (study) -> 3 (now)"]


def test_a_test_objective_is_refused_before_anything_runs(tmp_path):
    out = run_train(search(tmp_path / "sweep", "optimized_metric=test_auroc"))
    assert out.returncode != 0 and "optimized_metric=test_auroc" in out.stderr + out.stdout
    assert not (tmp_path / "sweep").exists()  # not even the sweep directory


# --- end to end -----------------------------------------------------------------------------------


def test_a_killed_search_continues_to_its_total_and_reports_fresh_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    args = search(sweep, *chaos(tmp_path / "markers", kill_job=1, kill_epoch=1), "hydra.sweeper.final_seeds=2")
    first = run_train(args)
    assert first.returncode == -9, first.stderr[-3000:]  # the whole sweep process, mid-trial 1
    assert (sweep / "1" / "checkpoints" / "last.ckpt").exists()
    assert {t.number: t.state.name for t in study(sweep).trials} == {0: "COMPLETE", 1: "RUNNING"}

    second = run_train(args)  # the same command: continues the study
    assert second.returncode == 0, second.stderr[-3000:]
    trials = study(sweep).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert sorted(t.user_attrs["job"] for t in trials) == [0, 1, 2]  # trial 1 is still job 1: resumed, not replaced
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert sorted(rows) == [0, 1, 2, 3, 4] and all(r["state"] == "completed" for r in rows.values())
    assert rows[1]["attempts"] == 2 and rows[0]["attempts"] == 1  # job 0 was not run again
    assert "resuming that run" in (sweep / "1" / "train.log").read_text()  # from its last.ckpt
    summary = json.loads((sweep / "search_summary.json").read_text())
    best = summary["best_trial"]
    assert summary["final"]["jobs"] == [3, 4] and summary["final"]["seeds"] == [1000, 1001]
    assert summary["final"]["val"]["n"] == 2 and summary["final"]["optimism"] == pytest.approx(
        best["search_best_val"] - summary["final"]["val"]["mean"])
    assert summary["final"]["test"]["test_auroc"]["n"] == 2
    for job in (0, 1, 2):  # trials never test
        assert not any(k.startswith("test_") for k in json.loads((sweep / str(job) / "metrics.json").read_text()))
    for png in ("search_history.png", "search_importances.png", "search_slice_model.dropout.png",
                "search_slice_model.hidden.png"):
        assert (sweep / png).stat().st_size > 1000, summary["plots"]
    assert "selection's optimism" in (sweep / "search_summary.md").read_text()

    changed = run_train([a.replace("hparams_search=toy", "hparams_search=toy_wider") for a in args])
    assert changed.returncode != 0
    message = changed.stderr + changed.stdout
    assert "space.model.dropout" in message and "space.model.hidden" in message, message[-3000:]
    assert sorted(int(r["job"]) for r in Ledger(sweep).rows()) == [0, 1, 2, 3, 4]  # nothing ran


def test_a_pruned_trial_is_pruned_not_failed(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_train(search(sweep, "hydra.sweeper.n_trials=2", "trainer.max_epochs=3",
                           "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:2.0}"))  # AUROC < 2: always
    assert out.returncode == 0, out.stderr[-3000:]
    assert [t.state.name for t in study(sweep).trials] == ["PRUNED", "PRUNED"]
    for row in Ledger(sweep).rows():
        assert row["state"] == "pruned" and row["exit_reason"] == "pruned after epoch 0"
        metrics = json.loads((sweep / str(row["job"]) / "metrics.json").read_text())
        assert metrics["pruned"] is True and metrics["epochs_trained"] == 1  # stopped after epoch 0 of 3
    summary = json.loads((sweep / "search_summary.json").read_text())
    assert summary["trial_states"] == {"pruned": 2} and "final" not in summary
    assert "| pruned |" in (sweep / "search_summary.md").read_text()
