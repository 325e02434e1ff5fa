"""One base for the settings of every embedded simulator (``data.simulation`` in the configs).

A simulator's config is a dataclass that also subclasses ``SimConfig``. The base gives it:

- ``from_mapping``: construction from a mapping (a Hydra DictConfig too), None (the defaults) or an
  instance (re-validated); unknown keys are refused, naming them and the allowed ones;
- coercion of every field to its declared type (``int``, ``float``, ``str``, ``bool``, ``tuple[X, ...]``,
  ``tuple[X, Y]``, nested), so that YAML lists, and ints given for floats, make equal configs that hash
  equally; a value that does not fit fails naming the field;
- ``content_hash``: a short stable hash of every field and the simulator version, which names the cache
  directory (rigor.cache.build_once).

A subclass sets ``hash_version`` (the key and number of its simulator version inside the hash) and may
define ``_validate`` for its own checks, raising ``self._bad(field, why)``.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from rigor.cache import content_hash

C = TypeVar("C", bound="SimConfig")


class SimConfig:
    """Mixin of a simulation config dataclass (frozen or not): coercion, ``from_mapping``, ``content_hash``."""

    #: Where the fields live in the run config; errors are reported as ``<config_path>.<field>``.
    config_path: ClassVar[str] = "data.simulation"
    #: (key, simulator version) added to the fields before hashing; bump the version when the code changes
    #: the generated data, so that old caches are not reused.
    hash_version: ClassVar[tuple[str, int]] = ("version", 1)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            try:
                value = _coerce(value, hints[f.name])
            except TypeError as err:
                raise self._field_error(f.name, value, str(err)) from None
            object.__setattr__(self, f.name, value)  # works for frozen dataclasses too
        self._validate()

    def _validate(self) -> None:
        """Checks beyond the field types (subclasses override; raise ``self._bad(field, why)``)."""

    def _field_error(self, name: str, value: Any, why: str) -> ValueError:
        return ValueError(f"{self.config_path}.{name} = {value!r}: {why}")

    def _bad(self, name: str, why: str) -> ValueError:
        """The error for field `name`, naming it and its current value."""
        return self._field_error(name, getattr(self, name), why)

    @classmethod
    def from_mapping(cls: type[C], cfg: C | Mapping[str, Any] | None) -> C:
        """A config from a mapping of its fields (e.g. Hydra's ``data.simulation``), None (defaults) or itself.

        Raises:
            ValueError: For an unknown key (naming it and the known ones) or a bad value (naming the field).
        """
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):  # rebuilt, so that a config changed after construction is checked again
            return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})  # type: ignore[arg-type]
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{cls.config_path}: expected a {cls.__name__} or a mapping, got {type(cfg).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(map(str, cfg.keys())) - known)
        if unknown:
            raise ValueError(f"{cls.config_path}: unknown key(s) {unknown} ({cls.__name__}); known: {sorted(known)}")
        return cls(**{str(k): _plain(v) for k, v in cfg.items()})

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain Python values (tuples stay tuples)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def content_hash(self) -> str:
        """12 hex digits of sha256 over every field and ``hash_version``: names the cache directory."""
        key, version = self.hash_version
        return content_hash({key: version, **self.to_dict()}, length=12)


def _plain(value: Any) -> Any:
    """Hydra ListConfig / DictConfig values to plain lists and dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, tp: Any) -> Any:
    """`value` converted to the type `tp` (recursively for tuples).

    Raises:
        TypeError: Saying what was expected (the caller names the field).
    """
    if tp is bool:
        if not isinstance(value, (bool, np.bool_)):  # never 0/1 or "yes"
            raise TypeError("expected true/false")
        return bool(value)
    if tp in (int, float):
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"expected {'an integer' if tp is int else 'a number'}, not true/false")
        if tp is int and isinstance(value, numbers.Integral):
            return int(value)  # exact, also for seeds beyond float precision
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"expected {'an integer' if tp is int else 'a number'}") from None
        if tp is float:
            return number
        if not number.is_integer():
            raise TypeError("expected an integer")
        return int(number)
    if tp is str:
        if isinstance(value, (bool, np.bool_)):  # YAML 1.1 reads an unquoted yes/no/on/off as a boolean
            raise TypeError(f"expected a string, got {value} (quote words such as \"yes\" or \"no\" in YAML)")
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise TypeError("expected a list")
        items = list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in items)
        if len(items) != len(args):
            raise TypeError(f"expected a list of {len(args)} values")
        return tuple(_coerce(v, t) for v, t in zip(items, args))
    return value  # any other annotation: kept as given
