"""Hydra override strings, parsed in one place: the key, one spelling per value, and plumbing keys.

Every reader of overrides (arm names in analysis/summary.py, the launchers' resume check, the ledger's
rows, the sweep reader's experiment name) goes through ``parse_override``, which uses Hydra's own
override grammar (``hydra.core.override_parser``), so quoting, ``+``/``++``/``~``, lists, dicts and
escapes are read as Hydra reads them. This module imports Hydra only when it parses, and nothing of
Lightning, so analysis/ can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

#: Config keys that may change between starts of one run (where files go, what logs, how many workers):
#: left out of a run's config stamp (rigor/guard.py), of a sweep job's identity (rigor/launchers.py) and
#: of arm names (evaluate.py task=summarize).
PLUMBING = (
    "paths", "logger", "hydra", "ckpt_path", "cpu_threads", "train", "test", "tags", "summary", "resume_force",
    "resume_sweep", "rerun_failed",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.sync_batchnorm",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "data.num_workers", "data.sim_workers", "data.cache_dir",
)


@dataclass(frozen=True)
class Override:
    """One parsed override.

    Attributes:
        text: The override as given (stripped).
        prefix: ``""``, ``"+"``, ``"++"`` or ``"~"``.
        key: The key without the prefix, with its ``@package`` when given: ``seed``, ``db@pkg``, ``hydra/launcher``.
        value: The value as Hydra reads it (``True``, ``0.001``, ``[1, 2]``, ``"a b"``; None for null and for
            a bare ``~key``); for an override Hydra cannot parse, the text after the first ``=`` (or None).
        canonical: One spelling per value: ``x=true`` and ``x=True``, ``x=1e-3`` and ``x=0.001``,
            ``x=[1, 2]`` and ``x=[1,2]`` give one string. An override Hydra cannot parse (a sweep such as
            ``x=a,b``, an unquoted ``x=a=b``) is its own text.
        parsed: Whether Hydra's grammar parsed it.
        sweep: The values of a discrete sweep (``x=a,b``, ``x=choice(a,b)``) as strings, in order; else None.
    """

    text: str
    prefix: str
    key: str
    value: Any
    canonical: str
    parsed: bool
    sweep: tuple[str, ...] | None = None


def _prefix(text: str) -> str:
    return "++" if text.startswith("++") else text[:1] if text[:1] in ("+", "~") else ""


@lru_cache(maxsize=1)
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


@lru_cache(maxsize=8192)
def parse_override(text: str) -> Override:
    """Parse one override string as Hydra does; one Hydra cannot parse is split at its first ``=``."""
    text = str(text).strip()
    try:
        hydra_override = _parser().parse_overrides([text])[0]
    except Exception:  # not Hydra's grammar: compare as text
        key, sep, raw = text.partition("=")
        return Override(text, _prefix(text), key.lstrip("+~").strip(), raw if sep else None, text, False)
    element = hydra_override.get_key_element()  # prefix + key (+ @package)
    prefix = _prefix(element)
    value = hydra_override.value()
    sweep = None
    if hydra_override.is_sweep_override():  # x=a,b, choice(...), range(...): a job never holds one
        canonical = text
        if hydra_override.is_discrete_sweep():
            sweep = tuple(hydra_override.sweep_string_iterator())
    elif value is None:  # null, and a bare ~key (a delete whatever the value)
        canonical = element if hydra_override.is_delete() else f"{element}=null"
    else:
        canonical = f"{element}={hydra_override.get_value_element_as_str()}"
    return Override(text, prefix, element[len(prefix):], value, canonical, True, sweep)


def override_key(override: str) -> str:
    """The key of an override, without +/++/~ prefixes: ``'++seed=3'`` -> ``'seed'``."""
    return parse_override(override).key


def canonical_override(override: str) -> str:
    """The override in one spelling per value (see Override.canonical); the prefix is kept."""
    return parse_override(override).canonical


def ignored_key(key: str, ignore: Sequence[str]) -> bool:
    """Whether an override key is one of `ignore` or below one (``a.b``, ``a/b`` under ``a``)."""
    return any(key == i or key.startswith((i + ".", i + "/")) for i in ignore)


def is_plumbing(override: str, plumbing: Sequence[str] = PLUMBING) -> bool:
    """Whether an override sets a plumbing key (PLUMBING, or below one): how a run runs, not what it computes."""
    return ignored_key(override_key(override), plumbing)


def comparable_overrides(overrides: Sequence[str], plumbing: Sequence[str] = PLUMBING) -> list[str]:
    """The overrides that define a job, canonical and in their order, with plumbing ones left out
    (``x=true`` typed by a user and ``x=True`` written back by the sweeper are one job)."""
    return [canonical_override(o) for o in overrides if not is_plumbing(o, plumbing)]
