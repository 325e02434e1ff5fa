"""The placement rule (docs/contract.md, "Where a family's files go"): one home per family, and a wall.

- A family is a subpackage of the same name in each code folder where it has code; its configs are
  conf/<group>/<family>*.yaml.
- Shared code (each folder's root, rigor/, the entry points) never imports a family: importing every
  shared module loads no family module.
- Runs saved before the move name old modules; their `_target_`s still resolve.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CODE_FOLDERS = ("analysis", "callbacks", "datamodules", "lightning_modules", "tasks")
SHARED_PACKAGES = (*CODE_FOLDERS, "rigor", "hydra_plugins")
# config groups whose files belong to one family each; the rest (trainer, logger, paths, ...) are shared
FAMILY_GROUPS = ("data", "model", "experiment", "thresholds")


def families() -> list[str]:
    """A family is a subpackage of datamodules/ (every family has data)."""
    return sorted(p.parent.name for p in (ROOT / "datamodules").glob("*/__init__.py"))


def family_packages() -> dict[str, list[str]]:
    """Every family subpackage of the code folders, by folder."""
    return {f: sorted(p.parent.name for p in (ROOT / f).glob("*/__init__.py")) for f in CODE_FOLDERS}


def shared_modules() -> list[str]:
    """Dotted names of the modules at the roots of the shared packages (no family subpackage)."""
    names = []
    for package in SHARED_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts
            if package in CODE_FOLDERS and len(parts) > 2:
                continue  # inside a family subpackage
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def is_family_module(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[0] in CODE_FOLDERS and parts[1] in set(families())


def test_every_family_subpackage_is_a_family():
    fams = set(families())
    assert fams >= {"lens", "puzzle", "clip_subtask", "weak_lensing", "audio"}
    for folder, packages in family_packages().items():
        assert set(packages) <= fams, f"{folder}/ has subpackages {sorted(set(packages) - fams)} that are no family (no datamodules/<name>/)"


def test_family_configs_are_named_after_their_family():
    fams = families()
    shared_tasks = {"predict", "calibrate", "compare", "summarize", "power", "score_sweep"}
    for group in (*FAMILY_GROUPS, "task"):
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            if group == "task" and path.stem in shared_tasks:
                continue
            assert any(path.stem == f or path.stem.startswith(f + "_") for f in fams), (
                f"conf/{group}/{path.name}: a family's config file is named <family>*.yaml ({fams})")


def family_imports(source: str) -> list[str]:
    """The family modules a module's source imports (anywhere in it, functions included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found += [n for n in names if is_family_module(n)]
    return found


def test_shared_code_never_imports_a_family_statically():
    offenders = []
    for name in shared_modules():
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        offenders += [f"{name} imports {t}" for t in family_imports(path.read_text())]
    assert not offenders, "shared code imports a family:\n" + "\n".join(offenders)


def test_importing_every_shared_module_loads_no_family_module():
    """Dynamic check (catches imports inside functions run at import time and re-exports)."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {shared_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = [m for m in json.loads(out.stdout.strip().splitlines()[-1]) if is_family_module(m)]
    assert not loaded, f"importing the shared modules loaded family modules: {loaded}"


def test_the_wall_sees_a_violation():
    """The checks can fail: a family import, top-level or inside a function, is found; shared ones are not."""
    source = "from analysis.metrics import auroc\nimport datamodules.base\ndef f():\n    from analysis.lens import gates\n"
    assert family_imports(source) == ["analysis.lens", "analysis.lens.gates"]
    assert family_imports("import callbacks.weak_lensing.score as s") == ["callbacks.weak_lensing.score"]
    assert not is_family_module("analysis.metrics") and not is_family_module("datamodules.base")
    assert "analysis.lens.gates" not in shared_modules() and "analysis.metrics" in shared_modules()


def _targets(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield value
            else:
                yield from _targets(value)
    elif isinstance(node, list):
        for item in node:
            yield from _targets(item)


def test_every_target_in_conf_resolves():
    import hydra
    import yaml

    bad = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        for target in _targets(yaml.safe_load(path.read_text()) or {}):
            if "${" in str(target):
                continue
            try:
                hydra.utils.get_object(target)
            except Exception as err:  # noqa: BLE001
                bad.append(f"{path.relative_to(ROOT)}: {target} ({err})")
    assert not bad, "\n".join(bad)


def test_old_targets_are_upgraded_to_their_new_homes():
    """Every module moved into a family subpackage is known to upgrade_target, and its new name imports."""
    from rigor.config import MOVED_MODULES, upgrade_target, upgrade_targets

    for old, new in MOVED_MODULES.items():
        assert importlib.util.find_spec(new) is not None, f"{old} -> {new}: no such module"
        if not new.startswith(old + "."):  # datamodules.lens is now the family's package
            with pytest.raises(ImportError):
                importlib.import_module(old)  # really gone (else the entry is stale)
    assert upgrade_target("datamodules.lens.LensDataModule") == "datamodules.lens.datamodule.LensDataModule"
    assert upgrade_target("lightning_modules.nets.puzzle.CellClassifier") == "lightning_modules.puzzle.nets.CellClassifier"
    # today's names and other libraries' are left alone
    for target in ("datamodules.lens.datamodule.LensDataModule", "torch.optim.AdamW", "analysis.summary.metrics_table"):
        assert upgrade_target(target) == target
    cfg = {"a": [{"_target_": "analysis.decision.lens_summary", "x": "${seed}"}], "b": {"_target_": "callbacks.wl_score.WLScore"}}
    assert upgrade_targets(cfg) == {"a": [{"_target_": "analysis.lens.decision.lens_summary", "x": "${seed}"}],
                                    "b": {"_target_": "callbacks.weak_lensing.score.WLScore"}}


def test_hydra_internal_that_sweeps_rely_on_is_there():
    """rigor.config.compose_sweeps_with_their_first_experiment wraps this method (hydra-core 1.3)."""
    import inspect

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    params = list(inspect.signature(ConfigLoaderImpl.load_configuration).parameters)
    assert params[:4] == ["self", "config_name", "overrides", "run_mode"]
