"""evaluate.py's predict task: rebuild a run from its saved config and write its predictions file.

    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt split=test [mc_dropout.enabled=true] [trainer=cpu]
    # other data, labelled or not: a data config replacing the run's, and/or keys merged onto the run's data node
    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt data=lens_matched data.simulation.seed=7
    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt 'data_overrides=[data.manifest_path=/survey/manifest.parquet]'

Other data: ``data=<name>`` (conf/data/<name>.yaml, composed by Hydra, replaces the run's data node; its
interpolations resolve against the run's config) and ``data_overrides=[data.<key>=<value>, ...]`` (merged
onto the run's data node, or onto the replacement) name the data. Before any forward pass, one item of
the new data is compared with one of the run's own data (every ``input_keys`` entry: present, same
shape and dtype; the datamodules' ``input_description()`` where they have one: the lens family's
``{bands, channels, stamp_size, preprocessing}``); a mismatch is refused naming the key, the expected
and the found. The predictions go to
``<run>/predictions/<data name>/predictions_<split>.csv`` (the data name from the manifest's stem and
content hash, or the data config's name and its hash), and unlabelled data (a split frame without the
truth columns) gives a file without them plus, for a binary model, ``candidates.csv`` (the top ``top_k``
by score, with metadata). Rows stream to disk batch by batch (analysis.predictions.PredictionsWriter),
with a progress bar (samples/s, time left).

The run's own trainer config is used (GPU and precision apply; ``trainer=<name>`` picks another file of
conf/trainer/), and the checkpoint is restored by Lightning through ``trainer.predict(ckpt_path=...)``,
so a module that saves only its trainable weights (adapters) restores through its own
``load_state_dict``. Writes ``<run>/predictions_<split>.csv`` and ``predictions_<split>.json`` in the
contract of docs/contract.md (analysis/predictions.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from analysis.calibration import mc_triage, probabilities_from_logits
from analysis.predictions import PredictionsWriter, prediction_record, prediction_table, sidecar_path, top_candidates
from callbacks.temperature_scaling import read_temperature
from rigor.cache import content_hash
from rigor.config import REPO_ROOT, check_targets, register_resolvers
from tasks.evaluation import resolve_triage
from rigor.guard import config_of_checkpoint, safe_load, saved_run_config
from rigor.jsonio import read_record

log = logging.getLogger(__name__)

def run_config(ckpt_path: str | Path, checkpoint: dict[str, Any] | None = None) -> tuple[DictConfig, Path]:
    """The saved config of the run that holds `ckpt_path` (``<run>/checkpoints/<name>.ckpt``) and its directory.

    Every ``_target_`` in it is checked (rigor.config.ALLOWED_TARGETS) before anything is built. Given the
    loaded `checkpoint`, the config is the one its config stamp says it was trained under
    (rigor.guard.config_of_checkpoint); a mismatch with every saved config is an error naming the keys.
    """
    register_resolvers()
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path: {ckpt_path} does not exist")
    run_dir = ckpt_path.resolve().parent.parent
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"ckpt_path: expected the run's config at {config_path} (checkpoints/ inside a Rigor run directory)")
    if checkpoint is not None:
        return config_of_checkpoint(run_dir, checkpoint, ckpt_path)[0], run_dir
    return saved_run_config(config_path, run_dir), run_dir


def trainer_config(run_cfg: DictConfig, name: str | DictConfig | None) -> DictConfig:
    """The run's trainer config, or conf/trainer/<name>.yaml; one device (prediction needs no DDP).

    Args:
        run_cfg: The run's saved config.
        name: None (the run's own trainer), a conf/trainer name, or the node Hydra composed from
            ``trainer=<name>`` on evaluate.py's command line (evaluate.yaml's defaults list).
    """
    if isinstance(name, DictConfig):
        trainer = OmegaConf.create(OmegaConf.to_container(name))  # not in struct mode: keys are dropped below
    elif name:
        path = REPO_ROOT / "conf" / "trainer" / f"{name}.yaml"
        if not path.is_file():
            choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ValueError(f"trainer={name!r}: no conf/trainer/{name}.yaml; choose one of {choices}")
        own = OmegaConf.load(path)
        base = OmegaConf.load(path.parent / "default.yaml")
        own.pop("defaults", None)
        trainer = OmegaConf.merge(base, own)
    else:
        trainer = run_cfg.trainer.copy()
    for key in ("sync_batchnorm", "strategy", "limit_predict_batches"):
        trainer.pop(key, None)
    trainer.devices, trainer.num_nodes = 1, 1
    return trainer


def _thresholds(run_cfg: DictConfig) -> dict[str, Any]:
    node = run_cfg.get("thresholds")
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _target_columns(module: L.LightningModule) -> list[str]:
    return ["target"] if module.output_kind in ("binary", "multiclass") else list(getattr(module, "target_names", ()))


def data_overrides(cfg: DictConfig) -> list[str]:
    """The ``data_overrides`` list, each ``data.<key>=<value>`` (Hydra override syntax); others refused."""
    given = cfg.get("data_overrides") or []
    if isinstance(given, str):
        given = [given]
    items = [str(o) for o in given]
    bad = [o for o in items if not o.lstrip("+~").startswith("data.")]
    if bad:
        raise ValueError(f"data_overrides: {bad} do not start with 'data.'; only the data may change, the model is the run's")
    return items


def apply_data_overrides(run_cfg: DictConfig, replacement: DictConfig | None, overrides: list[str]) -> DictConfig:
    """The run's config with its data node replaced by `replacement` (if any) and `overrides` applied.

    Interpolations in the new node (``${seed}``, ``${paths.data_dir}``) resolve against the run's config.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = run_cfg.copy()
    OmegaConf.set_struct(cfg, False)
    if replacement is not None:
        node = OmegaConf.create(OmegaConf.to_container(replacement, resolve=False))
        node.pop("defaults", None)
        cfg.data = node
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            OmegaConf.select(cfg, parent).pop(leaf, None)
        else:
            OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)
    check_targets(cfg.data, "the new data config", "data")
    return cfg


def _file_sha256(path: Path, limit: int = 1 << 30) -> str:
    """sha256 of a file (its first `limit` bytes and its size, for a huge array)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = limit
        while left > 0 and (block := f.read(min(1 << 20, left))):
            digest.update(block)
            left -= len(block)
    digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()


# keys that say how data is read, not which data it is (they do not change the data's name)
_READING_KEYS = ("batch_size", "num_workers", "sim_workers", "cache_dir", "seed")


def data_identity(data_cfg: DictConfig, config_name: str | None) -> dict[str, Any]:
    """The identity of a data set: its name and what it is made of.

    A file of maps (``maps_path``, weak lensing) or a manifest (``manifest_path``): its path and sha256 (a
    manifest also the arrays beside it, path and size); the name is ``<file stem>-<hash[:8]>``. Otherwise (a
    simulation, a built-in data set): the sha256 of the resolved data node without its reading keys
    (_READING_KEYS), and the name ``<config name>-<hash[:8]>``.
    """
    node = OmegaConf.to_container(data_cfg, resolve=True)
    what = {k: v for k, v in node.items() if k not in _READING_KEYS}
    out: dict[str, Any]
    # a file names the data: a file of maps (weak lensing: it replaces the run's own test maps), else a manifest
    for key in ("maps_path", "manifest_path"):
        if not node.get(key):
            continue
        path, kind = Path(str(node[key])), key.removesuffix("_path")
        if not path.is_file():
            raise FileNotFoundError(f"data.{key}: {path} does not exist")
        digest = _file_sha256(path)
        out = {"name": f"{_safe(path.stem)}-{digest[:8]}", kind: str(path.resolve()), f"{kind}_sha256": digest}
        if kind == "manifest":
            out["arrays"] = {p.name: p.stat().st_size for p in sorted(path.parent.glob("*.npy"))}
        return {**out, "config": what}
    digest = content_hash(what, length=64)
    name = config_name or str(node.get("_target_", "data")).rsplit(".", 1)[-1]
    out = {"name": f"{_safe(name)}-{digest[:8]}", "config_hash": digest, "config": what}
    if isinstance(node.get("simulation"), dict):
        out["simulation_hash"] = content_hash(node["simulation"], length=64)
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "data"


def _describe(item: Any) -> dict[str, Any]:
    if isinstance(item, torch.Tensor):
        return {"shape": tuple(item.shape), "dtype": str(item.dtype)}
    return {"type": type(item).__name__}


def check_inputs_fit(module: L.LightningModule, own: Any, new: Any, own_split: str, new_split: str) -> None:
    """Refuse data whose inputs do not fit the model, before any forward pass.

    One item of the run's own data and one of the new data are compared on every key the module consumes
    (``input_keys``): present, shape and dtype; then the datamodules' ``input_description()`` (a family
    hook, e.g. the lens bands and their order), where both have one.

    Raises:
        ValueError: Naming the key, the expected (the run's data) and the found (the new data).
    """
    keys = list(getattr(module, "input_keys", ()))
    a, b = own.datasets[own_split][0], new.datasets[new_split][0]
    problems = []
    for key in keys:
        if key not in b:
            problems.append(f"input {key!r} is missing (the data gives {sorted(b)})")
        elif key in a and _describe(a[key]) != _describe(b[key]):
            problems.append(f"input {key!r}: expected {_describe(a[key])} (the run's data), found {_describe(b[key])}")
    da = own.input_description() if hasattr(own, "input_description") else {}
    db = new.input_description() if hasattr(new, "input_description") else {}
    for key in sorted(set(da) & set(db)):
        if da[key] != db[key]:
            problems.append(f"input {key!r}: expected {da[key]} (the run's data), found {db[key]}")
    if problems:
        raise ValueError("the new data does not fit the model; nothing was predicted:\n  " + "\n  ".join(problems))


def stop_on_sigterm(trainer: Any, writer: PredictionsWriter, split: str) -> None:
    """Exit with status 143 once SIGTERM arrived (a `kill`, SLURM's scancel or time limit).

    Lightning's handler only records the signal, and its predict loop never looks: a 200,000-cutout scoring
    would run to its end. The rows so far stay in the ``.partial`` file; no predictions file is written.
    """
    if getattr(trainer, "received_sigterm", False):
        log.error("predict %s: stopped by SIGTERM after %d rows; %s is incomplete and no predictions file was written",
                  split, writer.n, writer.partial)
        raise SystemExit(143)


class _StreamingWriter(L.Callback):
    """Writes each predicted batch's rows as it comes (memory stays that of one batch), with a progress bar."""

    def __init__(self, module: L.LightningModule, frame: pd.DataFrame, split: str, path: Path, temperature: float | None,
                 labelled: bool, top_k: int) -> None:
        self.kind, self.names = module.output_kind, tuple(getattr(module, "target_names", ()))
        self.frame, self.split, self.temperature, self.labelled = frame, split, temperature, labelled
        self.writer = PredictionsWriter(path)
        self.metrics = module.configure_metrics() if labelled else None
        self.top_k = int(top_k) if self.kind == "binary" else 0
        self.candidates: pd.DataFrame | None = None
        self.mc_std_sum, self.mc_rows = 0.0, 0
        self.mc: list[tuple[np.ndarray, np.ndarray]] = []  # (mean, std) for the triage (small: a few floats a row)
        self.bar = tqdm(total=len(frame), desc=f"predict {split}", unit="sample", dynamic_ncols=True, mininterval=1.0)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        index = outputs["index"].numpy()
        if self.metrics is not None:
            self.metrics.update(*pl_module.metric_inputs(outputs["outputs"], {"target": outputs["target"], "index": outputs["index"]}))
        shown = pl_module.prediction_outputs(outputs["outputs"]).numpy()
        probs = (probabilities_from_logits(shown, self.temperature)
                 if self.temperature is not None and self.kind != "regression" else None)
        mc = (outputs["mc_mean"].numpy(), outputs["mc_std"].numpy()) if "mc_mean" in outputs else None
        if mc is not None:
            self.mc.append(mc)
        table = prediction_table(self.kind, shown, self.frame.iloc[index], self.split, self.names, probs=probs, mc=mc,
                                 labelled=self.labelled)
        self.writer.append(table)
        if self.top_k:
            self.candidates = top_candidates(self.candidates, table, self.top_k, "prob" if probs is not None else "logit")
        self.bar.update(len(index))
        stop_on_sigterm(trainer, self.writer, self.split)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bar.close()


def prediction_request(ckpt_path: str | Path, data_cfg: DictConfig, identity: dict[str, Any] | None, split: str,
                       trainer_cfg: DictConfig, temperature: float | None, n_passes: int, mc_cfg: Any,
                       top_k: int) -> dict[str, Any]:
    """Everything a predictions file depends on: the checkpoint's bytes, the data, the split, the trainer
    (precision, device), the temperature, MC-Dropout and top_k. Its hash in the sidecar (``request_hash``)
    lets ``reuse=true`` keep a file that the same request would write again."""
    if identity is None:  # the run's own data: its resolved settings name it
        identity = {"config_hash": content_hash(OmegaConf.to_container(data_cfg, resolve=True), length=64)}
    mc = OmegaConf.to_container(mc_cfg, resolve=True) if isinstance(mc_cfg, DictConfig) else dict(mc_cfg or {})
    return {"checkpoint_sha256": _file_sha256(Path(ckpt_path)),
            "data": {k: v for k, v in identity.items() if k != "config"},
            "split": str(split), "trainer": OmegaConf.to_container(trainer_cfg, resolve=True),
            "temperature": temperature, "mc_passes": n_passes, "mc_dropout": mc if n_passes else None, "top_k": top_k}


def reusable_predictions(out_dir: Path, split: str, request: dict[str, Any]) -> dict[str, Any] | None:
    """The report of ``<out_dir>/predictions_<split>.csv`` if its sidecar was written for this very request.

    A file from another checkpoint, data set, trainer or temperature (or from before request hashes were
    recorded, or one whose CSV is newer than its sidecar: a write that stopped between the two) is not
    reused, and task=predict writes it again.
    """
    csv_path = out_dir / f"predictions_{split}.csv"
    sidecar = sidecar_path(csv_path)
    if not (csv_path.is_file() and sidecar.is_file()):
        return None
    if csv_path.stat().st_mtime_ns > sidecar.stat().st_mtime_ns:  # the sidecar is written last: an older one is another file's
        return None
    record = read_record(sidecar)  # None for a half-written or foreign file
    if record is None or record.get("request_hash") != content_hash(request, length=64):
        return None
    print(f"predictions: {csv_path} (reused: written for the same checkpoint, data, split and trainer; reuse=false recomputes)")
    return {**record, **(record.get("metrics") or {}), "predictions_path": str(csv_path)}


def run_predict(cfg: DictConfig) -> dict[str, Any]:
    """Write predictions_<split>.csv/.json of a checkpoint (on its own data or another) and print the metrics.

    Args:
        cfg: ``ckpt_path`` (required), ``split``, ``out_dir``, ``trainer`` (a conf/trainer name or null),
            ``mc_dropout.{enabled, n_passes, review_std, auto_conf, auto_std}``; other data: ``data``
            (a data config composed from ``data=<name>``), ``data_overrides`` (``data.<key>=<value>`` items),
            ``top_k`` (candidates.csv of unlabelled binary predictions).
    """
    if not cfg.get("ckpt_path"):
        raise ValueError("evaluate: ckpt_path=<run>/checkpoints/best.ckpt is required for task=predict")
    checkpoint = safe_load(cfg.ckpt_path)  # refuses a file that would run code, before Lightning reads it
    run_cfg, run_dir = run_config(cfg.ckpt_path, checkpoint)  # the config its stamp says; targets checked
    split = cfg.get("split") or "test"
    replacement = cfg.get("data") if isinstance(cfg.get("data"), DictConfig) else None
    overrides = data_overrides(cfg)
    other = replacement is not None or bool(overrides)
    data_cfg = apply_data_overrides(run_cfg, replacement, overrides).data if other else run_cfg.data
    identity = data_identity(data_cfg, _data_choice()) if other else None
    if cfg.get("out_dir"):
        out_dir = Path(cfg.out_dir)
    else:
        out_dir = run_dir / "predictions" / identity["name"] if other else run_dir
    mc_cfg = cfg.get("mc_dropout") or {}
    n_passes = int(mc_cfg.get("n_passes") or 25) if mc_cfg.get("enabled", False) else 0
    # the run's temperature.json beside the checkpoint (old runs: the value inside best.ckpt)
    fit = read_temperature(cfg.ckpt_path, checkpoint)
    temperature = None if fit is None else fit["temperature"]
    trainer_cfg = trainer_config(run_cfg, cfg.get("trainer"))
    request = prediction_request(cfg.ckpt_path, data_cfg, identity, split, trainer_cfg, temperature, n_passes,
                                 mc_cfg, int(cfg.get("top_k") or 100))
    if cfg.get("reuse"):
        kept = reusable_predictions(out_dir, split, request)
        if kept is not None:
            return kept

    L.seed_everything(int(run_cfg.seed), workers=True)  # MC-Dropout masks are reproducible
    module: L.LightningModule = hydra.utils.instantiate(run_cfg.model)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(data_cfg)
    datamodule.setup("predict")
    if other:
        own = hydra.utils.instantiate(run_cfg.data)  # one item of the run's own data: what the model expects
        own.setup("predict")
        own_split = split if split in own.datasets and len(own.datasets[split]) else next(
            s for s, d in own.datasets.items() if len(d))
    if split not in getattr(datamodule, "datasets", {}):
        raise ValueError(f"split={split!r}: the datamodule has {sorted(getattr(datamodule, 'datasets', {}))}")
    if not len(datamodule.datasets[split]):
        raise RuntimeError(f"{split}: the split is empty; nothing to predict")
    if other:
        check_inputs_fit(module, own, datamodule, own_split, split)
        del own
    if n_passes:
        from lightning_modules.mc_dropout import MCDropout

        MCDropout(module, n_passes)  # refuses a model without dropout before any work
        module.mc_passes = n_passes

    kind = module.output_kind
    frame = datamodule.split_frame(split)
    labelled = all(c in frame.columns for c in _target_columns(module))
    csv_target = out_dir / f"predictions_{split}.csv"
    writer = _StreamingWriter(module, frame, split, csv_target, temperature, labelled, int(cfg.get("top_k") or 100))
    trainer_cfg.enable_progress_bar = False  # the writer's bar counts samples, with rate and time left
    trainer: L.Trainer = hydra.utils.instantiate(trainer_cfg, logger=False, callbacks=[writer],
                                                 default_root_dir=str(run_dir), enable_checkpointing=False)
    trainer.predict(module, dataloaders=datamodule.split_dataloader(split), ckpt_path=str(cfg.ckpt_path),
                    weights_only=True, return_predictions=False)
    if writer.writer.n == 0:
        raise RuntimeError(f"{split}: the split is empty; nothing to predict")
    values = {k.replace("/", "_"): float(v) for k, v in writer.metrics.compute().items()} if labelled else {}

    thresholds = _thresholds(run_cfg)
    fitted_on = None if fit is None else fit.get("split")
    report = prediction_record(kind, split, getattr(module, "target_names", ()), labelled=labelled, data=identity,
                               temperature=temperature, temperature_fitted_on=fitted_on, thresholds=thresholds,
                               label_scaler=_label_scaler(datamodule, module),
                               n=writer.writer.n, checkpoint=str(cfg.ckpt_path), experiment=run_cfg.get("experiment_name"),
                               seed=int(run_cfg.seed), metrics=values, request_hash=content_hash(request, length=64))
    if n_passes:
        mean = np.concatenate([m for m, _ in writer.mc]) if writer.mc else np.empty(0)
        std = np.concatenate([s for _, s in writer.mc]) if writer.mc else np.empty(0)
        report.update({"mc_passes": n_passes, "mc_mean_std": float(np.mean(std))})
        if kind != "regression":
            found, missing = resolve_triage(mc_cfg, thresholds)
            if missing:
                raise ValueError(f"MC-Dropout triage needs {[f'mc_dropout.{k}' for k in missing]}: the run's config has no "
                                 "thresholds.mc_* (seed 000: review_std 0.35, auto_conf 0.90, auto_std 0.25); give them")
            triage = mc_triage(mean, std, **found)
            report.update({f"triage_{k}": v for k, v in triage.items()})
    csv_path = writer.writer.close(report)
    if writer.candidates is not None and not labelled:
        cand = writer.candidates.copy()
        cand.insert(0, "rank", np.arange(1, len(cand) + 1))
        cand.to_csv(out_dir / "candidates.csv", index=False)
        report["candidates_path"] = str(out_dir / "candidates.csv")
    for key, value in report.items():
        if key not in ("thresholds", "metrics", "data"):
            print(f"{key:>24}: {value}")
    if identity is not None:
        print(f"{'data':>24}: {identity['name']}")
    for key, value in values.items():
        print(f"{key:>24}: {value}")
    print(f"predictions: {csv_path}")
    return {**report, **values, "predictions_path": str(csv_path)}


def _data_choice() -> str | None:
    """The ``data=<name>`` given on evaluate.py's command line (Hydra's runtime choices), or None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get("data")
    except Exception:  # called outside Hydra (tests calling run_predict directly)
        return None


def _label_scaler(datamodule: Any, module: L.LightningModule) -> dict[str, Any] | None:
    """Per target {loc, scale} where the datamodule standardises its labels (weak lensing), else None."""
    loc, scale = getattr(datamodule, "label_loc", None), getattr(datamodule, "label_scale", None)
    names = list(getattr(module, "target_names", ()))
    if loc is None or scale is None or not names:
        return None
    loc, scale = np.asarray(loc, dtype=np.float64).reshape(-1), np.asarray(scale, dtype=np.float64).reshape(-1)
    return {t: {"loc": float(loc[j]), "scale": float(scale[j])} for j, t in enumerate(names)}
