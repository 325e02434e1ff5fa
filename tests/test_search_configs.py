"""The shipped search files (conf/hparams_search/*.yaml) compose with the experiment they are written for,
and their spaces parse into Optuna distributions (rigor.search.search_space). No training."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose

pytest.importorskip("optuna")  # the search extra

from rigor.search import search_space  # noqa: E402

CASES = {"lens_lr_wd": "lens_b3", "audio_lora": "audio_lora_attn"}


def space_of(cfg):
    return search_space(OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True))


def test_every_search_file_is_covered():
    assert {p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml")} == set(CASES)


@pytest.mark.parametrize("name, experiment", sorted(CASES.items()))
def test_search_composes_with_its_experiment(name, experiment):
    cfg = compose([f"hparams_search={name}", f"experiment={experiment}"])
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.rigor_launchers.SearchSweeper"
    assert str(cfg.hydra.mode).endswith("MULTIRUN") and cfg.experiment_name == experiment
    space, fixed = space_of(cfg)
    assert space and not fixed
    for key in space:  # every searched key exists in the experiment's config
        assert OmegaConf.select(cfg, key) is not None, key


def test_lens_lr_wd_space():
    space, _ = space_of(compose(["hparams_search=lens_lr_wd", "experiment=lens_smoke"]))
    lr, wd = space["model.optimizer.lr"], space["model.optimizer.weight_decay"]
    assert lr.log and (lr.low, lr.high) == (1e-5, 1e-3)
    assert wd.log and (wd.low, wd.high) == (1e-6, 1e-2)


def test_audio_lora_space_covers_the_seed_grid():
    import optuna.distributions as dist

    cfg = compose(["hparams_search=audio_lora", "experiment=audio_grid"])
    space, _ = space_of(cfg)
    r, alpha, dropout = (space[f"model.net.lora.{k}"] for k in ("r", "alpha", "dropout"))
    # LoRA's r and alpha are ints: a float suggestion would not be a rank
    assert isinstance(r, dist.IntDistribution) and isinstance(alpha, dist.IntDistribution)
    assert r.log and alpha.log and isinstance(dropout, dist.FloatDistribution)
    grid = [compose(["experiment=audio_grid", f"+audio_grid={p.stem}"]).model.net.lora
            for p in sorted((ROOT / "conf" / "audio_grid").glob("*.yaml"))]
    assert len(grid) == 6
    for point in grid:
        assert r.low <= point.r <= r.high and alpha.low <= point.alpha <= alpha.high
        assert dropout.low <= point.dropout <= dropout.high
    # the pruning switch the benchmark uses: null turns it off
    off = compose(["hparams_search=audio_lora", "experiment=audio_grid", "hydra.sweeper.pruner=null"])
    assert off.hydra.sweeper.pruner is None


def test_the_summary_names_the_direction_of_the_best_value():
    from rigor.search import _markdown

    for direction, word in (("minimize", "min over trials"), ("maximize", "max over trials")):
        md = _markdown({"study": "s", "objective": "best_val_loss", "direction": direction, "storage": "journal",
                        "trial_states": {"completed": 2}, "trials": [],
                        "best_trial": {"trial": 1, "job": 1, "params": {}, "search_best_val": 0.25}})
        assert f"search's best ({word}: biased) | 0.25 |" in md
