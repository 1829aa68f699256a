"""The build, beyond what pyproject.toml declares: an editable install gets bytecode caches too.

A regular install has them (pip compiles what it installs); an editable one has none, and with
``PYTHONDONTWRITEBYTECODE`` set Python never writes them, so every ``pylockdep run`` would compile
pylockdep's sources again (some 80 ms).  So the in-place build that an editable install runs
compiles them, for the interpreter that builds (the one installing).
"""

import compileall

from setuptools import setup
from setuptools.command.build_ext import build_ext


class BuildExtAndBytecode(build_ext):
    def run(self) -> None:
        super().run()
        if self.inplace:
            for package in ("pylockdep", "kvm_model"):
                compileall.compile_dir(package, quiet=1)


setup(cmdclass={"build_ext": BuildExtAndBytecode})
