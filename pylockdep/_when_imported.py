"""Run a function as soon as a module has been imported, without importing it first.

Instrumentation reaches asyncio this way: importing asyncio from pylockdep would import logging and
concurrent.futures too, and make their module-level locks before a program's first line, so they
would never be validated.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


class _Loader:
    """The module's own loader, then ``action`` on the module it loaded."""

    def __init__(self, loader: Any, action: Callable[[ModuleType], None]) -> None:
        self.loader = loader
        self.action = action

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.action(module)


class Hook:
    """A ``sys.meta_path`` entry that runs ``action(module)`` once module ``name`` is imported."""

    def __init__(self, name: str, action: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.action = action
        self._finding = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        """The spec the other finders give ``name``, with a loader that runs the action after it."""
        if fullname != self.name or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, self.action)
        return spec

    def remove(self) -> None:
        """Stop waiting for the import."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def when_imported(name: str, action: Callable[[ModuleType], None]) -> Hook | None:
    """Run ``action(module)`` now if ``name`` is imported, else right after it is; returns the hook
    still waiting (None when the action ran at once)."""
    module = sys.modules.get(name)
    if module is not None:
        action(module)
        return None
    hook = Hook(name, action)
    sys.meta_path.insert(0, hook)
    return hook
