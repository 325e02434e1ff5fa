"""What keeps a run trustworthy when things go wrong: the resume guard, split checks, termination.

- The config that matters (everything but paths, loggers and trainer plumbing) is stamped into every
  checkpoint; a run started again in a directory holding last.ckpt resumes only under the same config.
- Splits are checked at set-up: an empty split, or a classification split with fewer than two classes
  where that makes the run meaningless, stops the run before any training, naming the split, its counts
  per class and the keys to change; a one-class test split is allowed and its undefined numbers are null.
- SIGTERM (scancel, a time limit, preemption) ends the run at the next batch boundary with a non-zero
  exit and a failure.json that says so; last.ckpt (the end of the latest finished epoch) is kept for resume.
  Ctrl-C (SIGINT) does the same (status ``interrupted``, exit 130); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import logging
import pickle
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rigor.config import check_targets, load_run_config, upgrade_targets
from rigor.overrides import PLUMBING  # the keys a resume may change (defined with the override parser)

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "rigor_config"
EXIT_TERMINATED = 143  # 128 + SIGTERM, what schedulers expect of a terminated job
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell expects after Ctrl-C


class ResumeConfigError(ValueError):
    """A run directory's checkpoint was written under another config."""


class SplitError(ValueError):
    """A split that makes the run meaningless (empty, or one class where two are needed)."""


class Terminated(RuntimeError):
    """The run received SIGTERM (status ``terminated``, exit 143) or SIGINT (``interrupted``, exit 130)."""

    def __init__(self, message: str, signal_name: str = "SIGTERM") -> None:
        super().__init__(message)
        self.status = "interrupted" if signal_name == "SIGINT" else "terminated"
        self.exit_code = EXIT_INTERRUPTED if signal_name == "SIGINT" else EXIT_TERMINATED


def relevant_config(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """The resolved config without the ``PLUMBING`` keys, as plain containers.

    ``resolve=False`` keeps interpolations as written (a sweep's resume check compares a job's saved
    ``.hydra/config.yaml`` with today's composition outside the job, where ``${hydra:...}`` would not resolve).
    """
    plain = OmegaConf.to_container(cfg, resolve=resolve, throw_on_missing=False)
    if plain.get("init_from") is None:
        plain.pop("init_from", None)  # stamped only when set: runs made before the key existed still resume
    for dotted in PLUMBING:
        node, *rest = dotted.split(".")
        if not rest:
            plain.pop(node, None)
        elif isinstance(plain.get(node), dict):
            plain[node].pop(rest[0], None)
    return plain


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every dotted key that differs; missing is shown as '<absent>'."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def safe_load(path: str | Path) -> dict[str, Any]:
    """A checkpoint loaded with ``weights_only=True`` (memory-mapped); a file that needs more is refused.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds objects beyond tensors and plain containers: unpickling it would run
            code stored in the file.
    """
    import torch  # here: train.py's config checks and a sweep's launching process need no torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: refused: it holds more than tensors and plain containers, and loading it would run "
                         f"code stored in the file ({first}). Rigor writes checkpoints that load with weights_only=True; "
                         "if you made this file and trust it, re-save its state_dict.") from None
    except RuntimeError as err:
        raise ValueError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None


def check_resume(current: dict[str, Any], last: Path, force: bool) -> None:
    """Refuse to resume `last` under a config that differs from the one it was written with.

    Raises:
        ResumeConfigError: Listing every differing key, with the ways out.
    """
    checkpoint = safe_load(last)
    stamped = checkpoint.get(CHECKPOINT_KEY)
    if stamped is None:
        log.warning("%s carries no config stamp (an older checkpoint): resuming without the config check", last)
        return
    diff = config_diff(upgrade_targets(stamped), current)  # a run from before the family subpackages names old modules
    if not diff:
        return
    lines = "\n".join(f"  {k}: {old!r} (checkpoint) -> {new!r} (now)" for k, old, new in diff[:30])
    more = f"\n  ... and {len(diff) - 30} more" if len(diff) > 30 else ""
    message = (f"{last} was written under another config; resuming would mix two runs:\n{lines}{more}\n"
               f"Start fresh in a new directory (drop hydra.run.dir / hydra.sweep.dir, or delete {last.parent}), "
               "or resume anyway with resume_force=true.")
    if force:
        log.warning("resume_force=true: %s", message)
        return
    raise ResumeConfigError(message)


# a value that names a place (the checkout, $RIGOR_DATA_DIR, paths.*): it differs between machines, not runs
_LOCATION = re.compile(r"\$\{(paths\.|repo_root:|oc\.env:)")


def _raw_value(cfg: DictConfig, dotted: str) -> Any:
    """The value at a dotted key as written in the file (an interpolation stays ``${...}``), or None."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return None
        node = node._get_node(part)
    return node._value() if node is not None else None


def saved_run_config(path: Path, run_dir: Path) -> DictConfig:
    """A run's saved config (target-checked) with ``paths.output_dir`` set to `run_dir`, checked again resolved."""
    cfg = load_run_config(path)
    if isinstance(cfg.get("paths"), DictConfig):
        cfg.paths.output_dir = str(run_dir)  # was ${hydra:runtime.output_dir}, unknown outside that run
    check_targets(cfg, str(path))  # what failed to resolve before loading resolves now
    return cfg


def config_of_checkpoint(run_dir: Path, checkpoint: Mapping[str, Any], ckpt_path: str | Path) -> tuple[DictConfig, Path]:
    """The saved config `checkpoint` was trained under: the config stamp in it (callbacks.run_checkpoint.ConfigStamp) is the truth.

    ``<run>/.hydra/config.yaml`` when it matches the stamp, else the newest ``.hydra/restarts/*/config.yaml``
    that does (a run resumed with resume_force=true). Keys that differ only by where the run is
    (interpolations of ``paths.*``, ``${repo_root:}``, ``${oc.env:...}``: a run copied to another machine)
    are accepted with a warning naming them. A checkpoint without a stamp (older runs) uses .hydra/config.yaml.

    Raises:
        ResumeConfigError: No saved config matches the stamp: names every differing key, .hydra/config.yaml
            against the checkpoint (a run directory whose .hydra/ belongs to a start that trained nothing).
    """
    first = run_dir / ".hydra" / "config.yaml"
    cfg = saved_run_config(first, run_dir)
    stamped = checkpoint.get(CHECKPOINT_KEY)
    if stamped is None:
        log.warning("%s carries no config stamp (an older checkpoint): rebuilding the run from %s unchecked", ckpt_path, first)
        return cfg, first
    stamped = upgrade_targets(stamped)
    restarts = sorted((run_dir / ".hydra" / "restarts").glob("*/config.yaml"), reverse=True)
    first_diff: list[tuple[str, Any, Any]] | None = None
    near: tuple[DictConfig, Path, list[str]] | None = None
    for path in [first, *restarts]:
        candidate = cfg if path == first else saved_run_config(path, run_dir)
        try:
            diff = config_diff(stamped, relevant_config(candidate))
        except Exception as err:  # an interpolation that does not resolve here: not this one
            log.warning("%s does not resolve (%s); not compared with %s", path, err, ckpt_path)
            continue
        first_diff = diff if first_diff is None else first_diff
        if not diff:
            if path != first:
                log.warning("%s was trained under %s, not %s: using that one", ckpt_path, path, first)
            return candidate, path
        moved = [k for k, _, _ in diff if isinstance(_raw_value(candidate, k), str) and _LOCATION.search(_raw_value(candidate, k))]
        if near is None and len(moved) == len(diff):
            near = (candidate, path, moved)
    if near is not None:
        log.warning("%s: rebuilding the run from %s; these keys name other places than when it was trained (a "
                    "moved run?): %s", ckpt_path, near[1], ", ".join(near[2]))
        return near[0], near[1]
    lines = "\n".join(f"  {k}: {new!r} (.hydra/config.yaml) -> {old!r} (checkpoint)" for k, old, new in (first_diff or [])[:30])
    raise ResumeConfigError(f"{ckpt_path} was trained under another config than {first}, and no .hydra/restarts/ config "
                            f"matches it; rebuilding the run from it would use the wrong settings:\n{lines}\n"
                            "(a start that died before its first checkpoint left that .hydra/; the checkpoint's own config "
                            f"is in it under {CHECKPOINT_KEY!r})")


def check_splits(datamodule: Any, kind: str, splits: list[str], size_keys: str) -> list[str]:
    """Check every split the run will use; returns warnings for undefined-but-allowed cases.

    Args:
        datamodule: A Rigor datamodule, set up (``split_frame``).
        kind: The module's output kind.
        splits: The splits the run uses (train and val to fit, test to test).
        size_keys: The config keys that size the splits, for the message.

    Raises:
        SplitError: An empty split, or a train/val split of a classifier with fewer than two classes.
    """
    warnings = []
    for split in splits:
        frame = datamodule.split_frame(split)
        n = len(frame)
        if n == 0:
            raise SplitError(f"the {split} split is empty (0 samples); change {size_keys}")
        if kind not in ("binary", "multiclass") or "target" not in frame:
            continue
        counts = {int(k): int(v) for k, v in frame["target"].value_counts().sort_index().items()}
        if len(counts) >= 2:
            continue
        text = f"the {split} split has {n} samples, all of class {next(iter(counts))} (counts per class: {counts})"
        if split == "test":
            warnings.append(f"{text}: AUROC and other two-class test numbers are undefined and written as null")
            log.warning("%s", warnings[-1])
        else:
            what = "nothing to learn" if split == "train" else "no validation metric (AUROC) to pick a checkpoint or stop early"
            raise SplitError(f"{text}: {what}; change {size_keys}")
    return warnings


class TermHandler:
    """Record SIGTERM and SIGINT; Lightning's own SIGTERM handler (which chains to this one) stops fitting
    and testing at a batch boundary, and a SIGINT is handed to it, so Ctrl-C stops at the same place."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.previous: Any = None
        self.previous_int: Any = None
        self._forwarding = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self._forwarding:
            return  # Lightning's SIGTERM handler calling this one back with the SIGINT handed to it
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, not at the next batch boundary
        self.received = name
        code = EXIT_INTERRUPTED if name == "SIGINT" else EXIT_TERMINATED
        log.warning("received %s: the run stops at the next batch boundary and exits with %d%s", name, code,
                    " (Ctrl-C again to stop at once)" if name == "SIGINT" else "")
        handler = signal.getsignal(signal.SIGTERM)
        if name == "SIGINT" and callable(handler) and handler is not self:
            # while Lightning runs a loop, its SIGTERM handler is installed: it stops the loop at a batch boundary
            self._forwarding = True
            try:
                handler(signum, frame)
            finally:
                self._forwarding = False

    def install(self) -> TermHandler:
        self.previous = signal.signal(signal.SIGTERM, self)
        self.previous_int = signal.signal(signal.SIGINT, self)
        return self

    def check(self, where: str, last: Path) -> None:
        """Raise Terminated if SIGTERM arrived (call between phases)."""
        if self.received:
            epoch = None
            if last.exists():
                epoch = int(safe_load(last)["epoch"])
            kept = f"{last} holds the end of epoch {epoch}" if epoch is not None else "no last.ckpt was written yet"
            raise Terminated(f"{self.received} during {where}; {kept}; run the same command again to resume", self.received)

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        if self.previous_int is not None:
            signal.signal(signal.SIGINT, self.previous_int)
