"""Configuration: the ``[tool.pylockdep]`` table of ``pyproject.toml``, read by the CLI and the plugin.

The file is found as ruff and pytest find theirs: the nearest ``pyproject.toml``, from the working
directory upwards, that has a ``[tool.pylockdep]`` table.  ``pylockdep run --config FILE`` and
``pytest --lockdep-config FILE`` name one instead; such a file may also be a plain TOML file whose
top level is the table itself.  Importing pylockdep reads no file: only the command and the plugin
call :func:`load`.

```toml
[tool.pylockdep]
preempt_rt = false                # validator options, as pylockdep.validate() takes them
prove_raw_lock_nesting = true
max_lock_depth = 48
baseline = "lockdep-baseline.json"  # relative to this file: reports already known, not reported again

[[tool.pylockdep.suppress]]       # silence reports of a kind whose every class matches a pattern
kind = "circular"
classes = ["*readerwriterlock/rwlock.py:*"]
reason = "first reader / last reader counter"
```

Keys may be spelled with ``-`` or ``_``.  An unknown key or a value of the wrong type is a
:class:`~pylockdep._suppress.ConfigError` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._options import Options
from ._suppress import Baseline, ConfigError, Suppression, Suppressions

__all__ = ["Config", "ConfigError", "find", "load"]

# Validator options the table may set (the others, a stream and raising, belong to the caller).
_OPTIONS = tuple(f.name for f in dataclasses.fields(Options) if f.name not in ("stream", "raise_on_report"))


@dataclass
class Config:
    """What ``[tool.pylockdep]`` says.  ``path`` is the file it came from (None: no file)."""

    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # validator keyword arguments
    suppress: tuple[Suppression, ...] = ()
    baseline: str | None = None  # absolute path

    def suppressions(self, baseline: str | None = None) -> Suppressions:
        """The suppressions and the baseline (``baseline`` instead of the configured one, if given)."""
        path = baseline or self.baseline
        return Suppressions(self.suppress, Baseline.read(path) if path else None)


def find(start: str | None = None) -> str | None:
    """The nearest ``pyproject.toml`` with a ``[tool.pylockdep]`` table, from ``start`` (the
    working directory) upwards; None if there is none."""
    directory = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate) and _table(_read(candidate), candidate, explicit=False) is not None:
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def load(path: str | None = None, start: str | None = None) -> Config:
    """The configuration in ``path``, or in the file :func:`find` finds from ``start``.

    A named file must exist; without one, and with no ``pyproject.toml`` holding the table, the
    configuration is empty.  Raises :class:`ConfigError` for anything it cannot use.
    """
    if path is None:
        path = find(start)
        if path is None:
            return Config()
    elif not os.path.isfile(path):
        raise ConfigError(f"{path}: no such configuration file")
    path = os.path.abspath(path)
    table = _table(_read(path), path, explicit=True) or {}
    return _parse(table, path)


def _read(path: str) -> dict[str, Any]:
    import tomllib  # only when there is a file to read: importing pylockdep stays cheap

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None


def _table(data: dict[str, Any], path: str, explicit: bool) -> dict[str, Any] | None:
    """``[tool.pylockdep]`` of a parsed file; for a file named explicitly that has no ``[tool]``
    table, the top level."""
    tool = data.get("tool")
    if isinstance(tool, dict) and "pylockdep" in tool:
        table = tool["pylockdep"]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [tool.pylockdep] must be a table")
        return table
    if explicit and "tool" not in data:
        return data
    return None


def _parse(table: Mapping[str, Any], path: str) -> Config:
    config = Config(path=path)
    where = f"{path}: [tool.pylockdep]"
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key in _OPTIONS:
            config.options[key] = value
        elif key == "baseline":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where} {raw_key} must be a file name, not {value!r}")
            config.baseline = os.path.join(os.path.dirname(path), value)
        elif key == "suppress":
            if not isinstance(value, list):
                raise ConfigError(f"{where} {raw_key} must be an array of tables ([[tool.pylockdep.suppress]])")
            config.suppress = tuple(
                Suppression.from_table(entry, f"{where} {raw_key}[{i}]") for i, entry in enumerate(value)
            )
        else:
            allowed = ", ".join((*_OPTIONS, "baseline", "suppress"))
            raise ConfigError(f"{where} {raw_key}: unknown key (allowed: {allowed})")
    try:
        Options(**config.options)  # the validator's own checks, once, with the file named
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config
