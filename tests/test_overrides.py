"""The one override parser (rigor/overrides.py): Hydra's grammar, one key and one spelling per override."""

from __future__ import annotations

from analysis.summary import arm_matches, arm_name
from rigor.overrides import (
    PLUMBING,
    canonical_override,
    comparable_overrides,
    is_plumbing,
    override_key,
    parse_override,
)


def test_prefixes_give_the_key_and_keep_the_prefix():
    assert [override_key(o) for o in ("seed=1", "+seed=1", "++seed=1", "~seed", "~seed=1")] == ["seed"] * 5
    assert [parse_override(o).prefix for o in ("seed=1", "+seed=1", "++seed=1", "~seed")] == ["", "+", "++", "~"]
    assert canonical_override("+data.frac=0.1") == "+data.frac=0.1"
    assert canonical_override("++x=true") == "++x=True"
    assert canonical_override("~seed") == "~seed" == canonical_override("~seed=null")  # a delete, whatever the value
    assert canonical_override("~seed=3") == "~seed=3"
    assert override_key("hydra/launcher=ray") == "hydra/launcher"
    assert override_key("db@pkg=mysql") == "db@pkg"


def test_one_spelling_per_value():
    assert canonical_override("x=true") == canonical_override("x=True") == "x=True"
    assert canonical_override("x=false") != canonical_override("x=true")
    assert canonical_override("lr=1e-3") == canonical_override("lr=0.001") == canonical_override("lr=1.0E-3")
    assert canonical_override("x=[1, 2]") == canonical_override("x=[1,2]") == "x=[1,2]"
    assert canonical_override("x={a: 1, b: [2]}") == canonical_override("x={a:1,b:[2]}")
    assert canonical_override("x=null") == "x=null"
    assert canonical_override("  seed=3 ") == "seed=3"


def test_quoting_is_read_as_hydra_reads_it():
    quoted = parse_override("name='a b'")
    assert quoted.key == "name" and quoted.value == "a b" and quoted.parsed
    assert canonical_override("name='a b'") == "name='a b'"  # the quote style is kept (Hydra writes it back as typed)
    assert parse_override('name="a b"').value == "a b"
    assert canonical_override("x=[a, 'b c']") == canonical_override("x=[a,'b c']")
    assert canonical_override("tag='1'") != canonical_override("tag=1")  # a quoted number is a string
    assert parse_override("tag='1'").value == "1" and parse_override("tag=1").value == 1
    assert parse_override("name=v1.5").value == "v1.5"


def test_a_value_with_an_equals_sign():
    quoted = parse_override('x="a=b"')
    assert (quoted.key, quoted.value, quoted.parsed) == ("x", "a=b", True)
    bare = parse_override("x=a=b")  # not Hydra's grammar: split at the first '=', compared as text
    assert (bare.key, bare.value, bare.canonical, bare.parsed) == ("x", "a=b", "x=a=b", False)
    assert override_key("model.opt=lr=3") == "model.opt"


def test_sweeps_keep_their_text_and_list_their_values():
    sweep = parse_override("experiment=a,b")
    assert sweep.key == "experiment" and sweep.sweep == ("a", "b") and sweep.canonical == "experiment=a,b"
    assert parse_override("+experiment=choice(a,b)").sweep == ("a", "b")
    assert parse_override("experiment=a").sweep is None


def test_plumbing_and_comparable_overrides():
    assert is_plumbing("cpu_threads=2") and is_plumbing("+resume_sweep=/a") and is_plumbing("trainer.devices=2")
    assert is_plumbing("hydra/launcher=ray") and is_plumbing("paths.sweep_dir=/b")
    assert not is_plumbing("cpu_threads_x=1") and not is_plumbing("trainer.max_epochs=3") and not is_plumbing("seed=1")
    assert "cpu_threads" in PLUMBING
    assert comparable_overrides(["x=true", "cpu_threads=1", "lr=1e-3"]) == ["x=True", "lr=0.001"]
    assert comparable_overrides(["x=true"]) == comparable_overrides(["x=True"])


def test_true_and_True_are_one_arm():
    assert arm_name(["x=true", "seed=1"]) == arm_name(["x=True", "seed=2"]) == "x=True"
    assert arm_matches("experiment=a model.lr=0.001", "model.lr=1e-3")  # a reference in another spelling
    assert not arm_matches("experiment=a model.lr=0.001", "model.lr=1e-2")


def test_rigor_modules_use_the_one_parser():
    """analysis.summary and the guard re-export the parser's names rather than keep their own copies."""
    import analysis.summary
    import rigor.guard
    import rigor.overrides

    assert analysis.summary.override_key is rigor.overrides.override_key
    assert analysis.summary.canonical_override is rigor.overrides.canonical_override
    assert rigor.guard.PLUMBING is rigor.overrides.PLUMBING
