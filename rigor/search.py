"""Hyperparameter search: an Optuna study (ask/tell) run through Rigor's launchers, kept in the sweep directory.

``python train.py -m hparams_search=<name> experiment=<X>`` picks ``hydra/sweeper=search``
(conf/hydra/sweeper/search.yaml), whose ``SearchSweeper`` asks Optuna for trials, hands each to the
configured launcher as one job (local, Ray, submitit) and tells the study what the job returned
(train.py's ``optimized_metric``, a validation metric). What it keeps (docs/sweeps.md "Hyperparameter search"):

- The study lives in ``<sweep dir>/study.journal`` (Optuna's JournalStorage; ``storage: sqlite`` gives
  ``study.db``) and every trial is one job of the sweep ledger. The same command again continues the study
  to ``n_trials`` finished (completed or pruned) trials: a trial whose sweep died (still ``RUNNING`` in the
  study) is launched again as the same job (same overrides, same directory: Rigor resumes it from its
  last.ckpt); a failed trial stays failed and a new trial, with a new job number, takes its place. Job
  numbers are stored on the trials (user attribute ``job``) and never reused.
- A study started with another search space, objective, direction or other overrides is refused, naming
  what changed.
- Trials at once (``n_jobs``): with Ray a finished trial's slot goes to the next suggestion at once
  (``RayLauncher.submit`` / ``wait_next``); submitit (SLURM) runs batches of ``n_jobs`` (one job array
  per batch: the launcher follows arrays, not single jobs); the local launcher runs one trial at a time
  (it runs jobs in this process, one after the other, so a batch would only ask before knowing more).
- Pruning: callbacks/pruning.py reports the objective each epoch from the job's process through the
  storage; a pruned trial stops at the end of that epoch, its metrics.json says ``pruned`` and its ledger
  row is ``pruned``; the sweeper tells the study PRUNED.
- After the search, the best trial's configuration is trained again on ``final_seeds`` fresh seeds and
  tested (the trials never test); ``search_summary.md``/``.json`` put the search's best validation score
  beside the fresh seeds' validation mean (the selection's optimism) and the test metrics with t CIs, and
  the plots are PNGs in the sweep directory.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from rigor.jsonio import write_json
from rigor.ledger import Ledger
from rigor.overrides import comparable_overrides, override_key, parse_override

log = logging.getLogger(__name__)

#: keys of the command line that say how the search runs, not what it searches (not compared on a resume)
SEARCH_PLUMBING = ("hparams_search",)
#: the callback every trial gets (a no-op without a pruner); the sweeper adds it so a search file need not
PRUNING_CALLBACK = ("++callbacks.search_pruning={_target_:callbacks.pruning.SearchPruning,"
                    "optimized_metric:${optimized_metric}}")
STORAGE_FILES = {"journal": "study.journal", "sqlite": "study.db"}


class SearchConfigError(ValueError):
    """A search that would mislead or cannot run: a test objective, a changed space, a bad parameter."""


# --- the objective --------------------------------------------------------------------------------


def check_objective(name: str | None) -> None:
    """Refuse an objective that is not a validation metric: selecting on test makes the test score a search result.

    Args:
        name: ``optimized_metric`` (None: the module's monitor, a validation metric).

    Raises:
        SearchConfigError: Naming the key, for ``test_*`` and any name without ``val``.
    """
    if name is None:
        return
    parts = str(name).replace("/", "_").split("_")
    if "test" in parts or str(name).startswith("test"):
        raise SearchConfigError(
            f"optimized_metric={name}: a search may not select on a test metric (the test score of the chosen "
            "configuration would then be the search's own optimum, biased upward). Give a validation metric, e.g. "
            "optimized_metric=best_val_auroc, or null for the module's monitor; the chosen configuration is tested "
            "once after the search, on fresh seeds (hydra.sweeper.final_seeds).")
    if "val" not in parts:
        raise SearchConfigError(f"optimized_metric={name}: not a validation metric (its name has no 'val'); a search "
                                "selects on validation only, e.g. optimized_metric=best_val_auroc")


def epoch_metric(optimized_metric: str | None, monitor: str) -> str:
    """The name, as logged each epoch (``val/auroc``), of the metric that ``optimized_metric`` summarises.

    ``best_val_auroc`` and ``last_val_auroc`` (metrics.json) are ``val/auroc`` per epoch; None is the monitor.
    """
    if not optimized_metric:
        return monitor
    name = str(optimized_metric)
    for prefix in ("best_", "last_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    head, _, rest = name.partition("_")
    return f"{head}/{rest}" if rest else head


# --- the search space -----------------------------------------------------------------------------


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{model: {dropout: x}}`` and ``{model.dropout: x}`` are the same parameter."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) or OmegaConf.is_dict(value):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def search_space(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Optuna distributions from ``hydra.sweeper.params`` in Hydra's sweep syntax (as the Optuna sweeper reads it).

    ``interval(a, b)`` is a float range (Hydra's parser reads its ends as floats, even ``interval(4, 64)``:
    use ``range`` for whole numbers), ``tag(log, interval(a, b))`` its log scale, ``range(a, b[, step])`` ints
    from a to b-1 (Python's range; ``tag(log, range(a, b))`` on a log scale), ``choice(x, y, ...)`` a
    categorical; a plain value is a fixed override of every trial.

    Returns:
        (parameter -> distribution, fixed overrides).

    Raises:
        SearchConfigError: A value Hydra cannot parse, naming the parameter.
    """
    import optuna.distributions as dist
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    space: dict[str, Any] = {}
    fixed: list[str] = []
    for key, value in flatten(params).items():
        text = f"{key}={value}" if not isinstance(value, bool) else f"{key}={str(value).lower()}"
        parsed = parse_override(text)
        if not parsed.parsed:
            raise SearchConfigError(f"hydra.sweeper.params.{key}: {value!r} is not Hydra's sweep syntax (interval(a, b), "
                                    "tag(log, interval(a, b)), range(a, b), choice(x, y))")
        sweep = parsed.value
        log_scale = "log" in getattr(sweep, "tags", set())
        if isinstance(sweep, ChoiceSweep):
            space[key] = dist.CategoricalDistribution(list(sweep.list))
        elif isinstance(sweep, RangeSweep):
            values = list(range(int(sweep.start), int(sweep.stop), int(sweep.step or 1))) \
                if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step or 1)) else None
            if not values:
                raise SearchConfigError(f"hydra.sweeper.params.{key}: {value}: range() takes ints with at least one value "
                                        "here; use interval(a, b) for floats")
            space[key] = dist.IntDistribution(values[0], values[-1], log=log_scale, step=1 if log_scale else int(sweep.step or 1))
        elif isinstance(sweep, IntervalSweep):
            if isinstance(sweep.start, int) and isinstance(sweep.end, int):
                space[key] = dist.IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
            else:
                space[key] = dist.FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
        else:
            fixed.append(parsed.canonical)
    if not space:
        raise SearchConfigError("hydra.sweeper.params: no parameter to search (give interval(...), range(...) or choice(...))")
    return space, fixed


def override_value(value: Any) -> str:
    """A trial's value as Hydra override text (``true``, ``null``, ``0.001``, a quoted string when needed)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if parse_override(f"x={text}").value == text:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def space_changes(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """How a study's recorded identity (space, objective, direction, overrides) differs from this command's."""
    lines = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key, "<absent>"), now.get(key, "<absent>")
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            lines += [f"  {key}.{k}: {old.get(k, '<absent>')} (study) -> {new.get(k, '<absent>')} (now)"
                      for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        else:
            lines.append(f"  {key}: {old} (study) -> {new} (now)")
    return lines


# --- the study ------------------------------------------------------------------------------------


def storage_for(sweep_dir: str | Path, kind: str) -> Any:
    """The study's storage in the sweep directory: a JournalStorage file (default) or SQLite.

    Raises:
        SearchConfigError: ``hydra.sweeper.storage`` is neither.
    """
    import optuna

    if kind not in STORAGE_FILES:
        raise SearchConfigError(f"hydra.sweeper.storage={kind}: one of {sorted(STORAGE_FILES)}")
    path = Path(sweep_dir) / STORAGE_FILES[kind]
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}", engine_kwargs={"connect_args": {"timeout": 60}})
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def load_study(sweep_dir: str | Path, sweeper: Mapping[str, Any], pruner: Any = None, sampler: Any = None) -> Any:
    """The sweep's study as the job processes open it (``sweeper``: the job's ``hydra.sweeper``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=str(sweeper.get("study_name") or "search"),
                             storage=storage_for(sweep_dir, str(sweeper.get("storage") or "journal")),
                             pruner=pruner, sampler=sampler)


def running_trial_of_job(study: Any, job: int) -> Any:
    """The study's RUNNING trial that job `job` runs (FrozenTrial), or None (a final run, a plain job)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("job") == job:
            return trial
    return None


def is_search(sweeper: Any) -> bool:
    """Whether a job's ``hydra.sweeper`` is this search's sweeper."""
    return str((sweeper or {}).get("_target_", "")).endswith("SearchSweeper")


# --- the sweeper ----------------------------------------------------------------------------------


class SearchSweeper(Sweeper):
    """Asks Optuna for trials, launches each as a job of the sweep, tells the study what it returned.

    Args (``hydra.sweeper.*``, conf/hydra/sweeper/search.yaml):
        params: The search space, Hydra's sweep syntax per key.
        n_trials: The study's total of finished (completed or pruned) trials.
        n_jobs: Trials at once (see the module docstring for each launcher).
        direction: ``maximize`` / ``minimize``; None: the module's ``mode`` (when the objective is its monitor).
        storage: ``journal`` or ``sqlite``.
        study_name: The study's name in the storage.
        sampler: An Optuna sampler config (``_target_``); None: TPE.
        pruner: An Optuna pruner config, or None (no pruning).
        max_failures: Stop asking after this many failed trials in one start (None: n_trials).
        final_seeds: Fresh seeds the chosen configuration is trained and tested on after the search (0: none).
        final_seed_start: The first of them (seeds final_seed_start, +1, ...).
        plots: Write the optimisation history, parameter importances and slice plots.
    """

    def __init__(self, params: Any = None, n_trials: int = 20, n_jobs: int = 1, direction: str | None = None,
                 storage: str = "journal", study_name: str = "search", sampler: Any = None, pruner: Any = None,
                 max_failures: int | None = None, final_seeds: int = 3, final_seed_start: int = 1000,
                 plots: bool = True) -> None:
        self.params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params or {})
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.direction, self.storage_kind, self.study_name = direction, str(storage), str(study_name)
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.max_failures = int(max_failures) if max_failures is not None else self.n_trials
        self.final_seeds, self.final_seed_start, self.plots = int(final_seeds), int(final_seed_start), bool(plots)
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ImportError('hparams_search needs the search extra (optuna>=4): pip install -e ".[search]"') from None
        # refused before the launcher exists: its setup makes (and locks) the sweep directory
        check_objective(config.get("optimized_metric"))
        self.space, self.fixed = search_space(self.params)
        self.direction = self._direction(config)
        from rigor.launchers import instantiate_launcher

        self.config, self.hydra_context = config, hydra_context
        self.launcher = instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def _direction(self, config: DictConfig) -> str:
        direction = self.direction
        mode = None
        target = OmegaConf.select(config, "model._target_", throw_on_resolution_failure=False)
        if not config.get("optimized_metric") and target:
            from rigor.config import _module_class_attribute

            try:
                mode = _module_class_attribute(str(target), "mode")
            except AttributeError:
                mode = None
        if direction is None:
            if mode is None:
                raise SearchConfigError("hydra.sweeper.direction: give maximize or minimize (optimized_metric is not the "
                                        "module's monitor, whose mode would say)")
            return "maximize" if mode == "max" else "minimize"
        if direction not in ("maximize", "minimize"):
            raise SearchConfigError(f"hydra.sweeper.direction={direction}: maximize or minimize")
        if mode is not None and (direction == "maximize") != (mode == "max"):
            raise SearchConfigError(f"hydra.sweeper.direction={direction} but the objective is the module's monitor, whose "
                                    f"mode is {mode}: the search would look for the worst configuration")
        return direction

    # -- the study's identity and bookkeeping --

    def _base_overrides(self, arguments: Sequence[str]) -> list[str]:
        for arg in arguments:
            if parse_override(arg).sweep is not None or "," in arg.partition("=")[2] and not parse_override(arg).parsed:
                raise SearchConfigError(f"{arg}: a search sweeps hydra.sweeper.params only; give {override_key(arg)} one "
                                        "value (or add it to the search space)")
        return list(arguments)

    def _identity(self, base: Sequence[str]) -> dict[str, Any]:
        from optuna.distributions import distribution_to_json

        return {"space": {k: distribution_to_json(d) for k, d in self.space.items()},
                "fixed": sorted(self.fixed), "direction": self.direction,
                "optimized_metric": str(self.config.get("optimized_metric")),  # type: ignore[union-attr]
                "overrides": " ".join(o for o in comparable_overrides(base) if override_key(o) not in SEARCH_PLUMBING)}

    def _open_study(self, sweep_dir: Path, base: Sequence[str]) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # (Hydra instantiates the sweeper's nested _target_s: they usually arrive as objects)
        sampler = _instantiate(self.sampler_cfg) or optuna.samplers.TPESampler()
        pruner = _instantiate(self.pruner_cfg) or optuna.pruners.NopPruner()
        study = optuna.create_study(study_name=self.study_name, storage=storage_for(sweep_dir, self.storage_kind),
                                    direction=self.direction, sampler=sampler, pruner=pruner, load_if_exists=True)
        identity = self._identity(base)
        stored = study.user_attrs.get("identity")
        if stored is None:
            study.set_user_attr("identity", identity)
        elif stored != json.loads(json.dumps(identity)):
            raise SearchConfigError(
                f"{sweep_dir}: its study ({self.study_name}) was started with another search; continuing it would pool "
                "trials of two searches:\n" + "\n".join(space_changes(stored, identity))
                + "\nRun the original search again (same hparams_search file and overrides), or start a new sweep directory.")
        return study

    @staticmethod
    def _next_job(study: Any, sweep_dir: Path) -> int:
        used = [int(t.user_attrs["job"]) for t in study.get_trials(deepcopy=False) if "job" in t.user_attrs]
        used += [int(r["job"]) for r in Ledger(sweep_dir).rows() if str(r["job"]).isdigit()]
        used += [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        used += [int(j) for j in study.user_attrs.get("final", {}).get("jobs", [])]
        return max(used, default=-1) + 1

    def _trial_overrides(self, base: Sequence[str], params: Mapping[str, Any]) -> list[str]:
        # test=false: a trial never looks at the test set (test is plumbing: not part of the job's identity)
        return [*base, *self.fixed, PRUNING_CALLBACK, "test=false", *[f"{k}={override_value(v)}" for k, v in params.items()]]

    def _result(self, sweep_dir: Path, job: int, ret: JobReturn) -> tuple[str, float | None, str]:
        """(state, value, reason) of a finished job: completed, pruned or failed."""
        from rigor.jsonio import read_record

        if ret.status != JobStatus.COMPLETED:
            try:
                ret.return_value
            except BaseException as err:  # noqa: BLE001 (the job's own error, re-raised by JobReturn)
                return "failed", None, f"{type(err).__name__}: {err}"[:300]
            return "failed", None, "the job did not complete"
        metrics = read_record(sweep_dir / str(job) / "metrics.json") or {}
        if metrics.get("pruned"):
            return "pruned", None, f"pruned after epoch {metrics.get('pruned_epoch')}"
        value = ret.return_value
        if not isinstance(value, (int, float)) or value != value:
            return "failed", None, (f"no value for optimized_metric={self.config.get('optimized_metric')} in metrics.json "  # type: ignore[union-attr]
                                    f"({value!r})")
        return "completed", float(value), ""

    def _tell(self, study: Any, trial_number: int, state: str, value: float | None, reason: str) -> None:
        from optuna.trial import TrialState

        if reason:
            study.set_user_attr(f"note_{trial_number}", reason)  # a finished trial's attributes are frozen: the study's
        if state == "completed":
            study.tell(trial_number, value)
        elif state == "pruned":
            study.tell(trial_number, state=TrialState.PRUNED)
        else:
            study.tell(trial_number, state=TrialState.FAIL)
        log.info("trial %d: %s%s%s", trial_number, state, f" {value:.6g}" if value is not None else "", f" ({reason})" if reason else "")

    # -- the sweep --

    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        base = self._base_overrides(arguments)
        study = self._open_study(sweep_dir, base)
        finished = (TrialState.COMPLETE, TrialState.PRUNED)

        # trials left RUNNING by a sweep that died: the same job again (Rigor resumes it, or reruns it from scratch)
        todo: list[tuple[int, int, list[str]]] = [
            (t.number, int(t.user_attrs["job"]), list(t.user_attrs["overrides"]))
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if "job" in t.user_attrs]
        if todo:
            log.info("resuming %d trials of an earlier start: jobs %s", len(todo), [j for _, j, _ in todo])
        failures = 0

        def wanted() -> int:
            done = len(study.get_trials(deepcopy=False, states=finished))
            return self.n_trials - done - len(running)

        def ask() -> tuple[int, int, list[str]]:
            trial = study.ask(self.space)
            job = self._next_job(study, sweep_dir)
            overrides = self._trial_overrides(base, trial.params)
            trial.set_user_attr("job", job)
            trial.set_user_attr("overrides", overrides)
            return trial.number, job, overrides

        running: dict[int, int] = {}  # job -> trial number
        streaming = callable(getattr(self.launcher, "submit", None)) and callable(getattr(self.launcher, "wait_next", None))
        slots = self.n_jobs if streaming or "Submitit" in type(self.launcher).__name__ or \
            "Slurm" in type(self.launcher).__name__ else 1
        if self.n_jobs > 1 and slots == 1:
            log.info("n_jobs=%d: the %s runs jobs one after the other in this process; one trial at a time",
                     self.n_jobs, type(self.launcher).__name__)

        def handle(results: Mapping[int, JobReturn]) -> None:
            nonlocal failures
            for job, ret in results.items():
                number = running.pop(job)
                state, value, reason = self._result(sweep_dir, job, ret)
                failures += state == "failed"
                self._tell(study, number, state, value, reason)

        while True:
            while len(running) < slots and (todo or (wanted() > 0 and failures < self.max_failures)):
                batch = []
                while len(running) + len(batch) < slots and (todo or (wanted() - len(batch) > 0 and failures < self.max_failures)):
                    batch.append(todo.pop(0) if todo else ask())
                if streaming:
                    for number, job, overrides in batch:
                        running[job] = number
                        handle(self.launcher.submit([overrides], job))
                else:
                    # a batch goes to the launcher with consecutive job numbers: one launch per run of them
                    for group in _consecutive(batch):
                        for number, job, _ in group:
                            running[job] = number
                        returns = self.launcher.launch([o for _, _, o in group], group[0][1])
                        handle({job: ret for (_, job, _), ret in zip(group, returns)})
            if not running:
                break
            handle(self.launcher.wait_next())
        if failures >= self.max_failures and wanted() > 0:
            log.error("%d trials failed in this start (max_failures=%d): the search stopped short of n_trials=%d",
                      failures, self.max_failures, self.n_trials)

        final_returns = self._final_runs(study, sweep_dir, base)
        summary = write_summary(study, sweep_dir, self.config, final_returns, self.plots)
        log.info("search summary: %s", sweep_dir / "search_summary.md")
        failed_final = [r for r in final_returns if r.status != JobStatus.COMPLETED]
        if failed_final:
            failed_final[0].return_value  # raises the first failed final run's error: the search is not reportable
        return summary

    def _final_runs(self, study: Any, sweep_dir: Path, base: Sequence[str]) -> list[JobReturn]:
        """Train and test the best trial's configuration on fresh seeds (the same jobs again on a resume)."""
        from optuna.trial import TrialState

        if self.final_seeds <= 0 or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return []
        best = study.best_trial
        seeds = list(range(self.final_seed_start, self.final_seed_start + self.final_seeds))
        search_seed = self.config.get("seed")  # type: ignore[union-attr]
        if search_seed in seeds:
            raise SearchConfigError(f"hydra.sweeper.final_seed_start={self.final_seed_start}: the fresh seeds {seeds} include "
                                    f"the search's seed={search_seed}; they must be new to measure the selection's optimism")
        final = study.user_attrs.get("final") or {}
        if final.get("trial") != best.number or final.get("seeds") != seeds:
            final = {"trial": best.number, "seeds": seeds, "jobs": [self._next_job(study, sweep_dir) + i for i in range(len(seeds))]}
            study.set_user_attr("final", final)
        overrides = [[*[o for o in best.user_attrs["overrides"] if o != "test=false"], "test=true", f"seed={s}"] for s in seeds]
        log.info("the chosen configuration (trial %d, job %d) on %d fresh seeds %s: jobs %s", best.number,
                 best.user_attrs.get("job"), len(seeds), seeds, final["jobs"])
        return list(self.launcher.launch(overrides, int(final["jobs"][0])))


def _instantiate(spec: Any) -> Any:
    """An Optuna sampler or pruner from its config, or as given (Hydra instantiated it already); None stays None."""
    if spec is None:
        return None
    if OmegaConf.is_config(spec) or isinstance(spec, Mapping):
        import hydra.utils

        return hydra.utils.instantiate(spec)
    return spec


def _consecutive(batch: Sequence[tuple[int, int, list[str]]]) -> list[list[tuple[int, int, list[str]]]]:
    groups: list[list[tuple[int, int, list[str]]]] = []
    for item in sorted(batch, key=lambda b: b[1]):
        if groups and item[1] == groups[-1][-1][1] + 1:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


# --- the summary ----------------------------------------------------------------------------------


def write_summary(study: Any, sweep_dir: Path, config: DictConfig, final_returns: Sequence[JobReturn],
                  plots: bool = True) -> dict[str, Any]:
    """search_summary.json / .md and the plots: trials by state, the best trial, the fresh seeds, the test result.

    The search's best validation score is the maximum (or minimum) over trials, so it is biased toward the
    direction of the search; the fresh seeds' validation mean of the same configuration is not. Their
    difference is the selection's optimism. Test metrics come from the fresh seeds only, with t CIs.
    """
    from optuna.trial import TrialState

    from analysis.summary import summarize_metric
    from rigor.jsonio import read_record

    objective = config.get("optimized_metric") or "the module's monitor (best_<monitor>)"
    trials = study.get_trials(deepcopy=False)
    ledger = {int(r["job"]): r for r in Ledger(sweep_dir).rows() if str(r["job"]).isdigit()}
    rows = [{"trial": t.number, "job": t.user_attrs.get("job"), "state": t.state.name.lower(), "value": t.value,
             "params": t.params, "last_epoch_reported": t.last_step,
             "ledger": (ledger.get(t.user_attrs.get("job")) or {}).get("state"),
             "reason": study.user_attrs.get(f"note_{t.number}")} for t in trials]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    out: dict[str, Any] = {"study": study.study_name, "direction": study.direction.name.lower(), "objective": objective,
                           "storage": str(next((sweep_dir / f for f in STORAGE_FILES.values() if (sweep_dir / f).exists()), "")),
                           "trial_states": counts, "trials": rows}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        out["best_trial"] = {"trial": best.number, "job": best.user_attrs.get("job"), "params": best.params,
                             "search_best_val": best.value}
    final = study.user_attrs.get("final") or {}
    if final and complete and final.get("trial") == study.best_trial.number:
        jobs, seeds = final["jobs"], final["seeds"]
        records = [read_record(sweep_dir / str(j) / "metrics.json") or {} for j in jobs]
        vals = [r.return_value if r.status == JobStatus.COMPLETED else float("nan") for r in final_returns] \
            if len(final_returns) == len(jobs) else [float("nan")] * len(jobs)
        val = summarize_metric([v if isinstance(v, (int, float)) and v is not None else float("nan") for v in vals])
        tests = sorted({k for r in records for k, v in r.items() if k.startswith("test_") and isinstance(v, (int, float))})
        out["final"] = {"trial": final["trial"], "seeds": seeds, "jobs": jobs, "val": val, "val_per_seed": vals,
                        "optimism": (out["best_trial"]["search_best_val"] - val["mean"]) if val["n"] else None,
                        "test": {k: summarize_metric([r.get(k, float("nan")) for r in records]) for k in tests}}
    if plots and complete:
        out["plots"] = write_plots(study, sweep_dir)
    write_json(sweep_dir / "search_summary.json", out)
    (sweep_dir / "search_summary.md").write_text(_markdown(out))
    return out


def write_plots(study: Any, sweep_dir: Path) -> dict[str, str]:
    """Optimisation history, parameter importances and one slice per parameter, as PNGs (optuna.visualization.matplotlib).

    Returns:
        plot -> file name, or -> "not drawn: <why>" (importances need two completed trials that differ).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    def save(name: str, draw: Any) -> str:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's ExperimentalWarning for the matplotlib backend
                axes = draw()
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(sweep_dir / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            return name
        except Exception as err:  # noqa: BLE001 (a plot that cannot be drawn is said, not fatal)
            plt.close("all")
            return f"not drawn: {type(err).__name__}: {err}"[:200]

    out = {"optimization_history": save("search_history.png", lambda: ovm.plot_optimization_history(study)),
           "param_importances": save("search_importances.png", lambda: ovm.plot_param_importances(study))}
    params = sorted({p for t in study.get_trials(deepcopy=False) for p in t.params})
    for param in params:
        out[f"slice {param}"] = save(f"search_slice_{param.replace('/', '_')}.png",
                                     lambda param=param: ovm.plot_slice(study, params=[param]))
    return out


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _markdown(out: Mapping[str, Any]) -> str:
    md = [f"# Search {out['study']}", "",
          f"Objective: {out['objective']} ({out['direction']}); study: {out['storage']}", "",
          "Trials: " + ", ".join(f"{k}: {v}" for k, v in sorted(out["trial_states"].items())), ""]
    best = out.get("best_trial")
    final = out.get("final")
    if best:
        md += [f"Best trial: {best['trial']} (job {best['job']}), params {best['params']}", ""]
        md += ["| | validation |", "| --- | --- |", f"| search's best ({'max' if out['direction'] == 'maximize' else 'min'} over trials: biased) | "
               f"{_fmt(best['search_best_val'])} |"]
        if final:
            v = final["val"]
            md += [f"| the same configuration, {v['n']} fresh seeds {final['seeds']} (mean, 95% t CI) | "
                   f"{_fmt(v['mean'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}] |",
                   f"| the selection's optimism (best minus fresh mean) | {_fmt(final['optimism'])} |", ""]
            if final["test"]:
                md += [f"Test, the chosen configuration on the fresh seeds (jobs {final['jobs']}), evaluated once each:", "",
                       "| metric | n | mean | 95% t CI |", "| --- | --- | --- | --- |"]
                md += [f"| {k} | {s['n']} | {_fmt(s['mean'])} | [{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] |"
                       for k, s in final["test"].items()]
                md.append("")
        else:
            md += ["", "No fresh-seed runs (hydra.sweeper.final_seeds=0): the best value above is the search's own optimum.", ""]
    else:
        md += ["No completed trial: nothing chosen.", ""]
    md += ["| trial | job | state | value | ledger | params | note |", "| --- | --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['trial']} | {r['job']} | {r['state']} | {_fmt(r['value'])} | {r['ledger']} | {r['params']} | {r['reason'] or ''} |"
           for r in out["trials"]]
    plots = out.get("plots") or {}
    if plots:
        md += ["", "Plots: " + ", ".join(f"{k}: {v}" for k, v in plots.items())]
    return "\n".join(md) + "\n"
