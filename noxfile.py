"""The test matrix: every supported CPython, with the C fast path and in pure Python.

``nox`` finds each interpreter on ``PATH`` (``.ci/run`` adds pyenv's versions there).
"""

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite twice: with the C fast path, then with ``PYLOCKDEP_PURE_PYTHON=1``."""
    session.install("-q", "-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)
    session.run("python", "-m", "pytest", "-q", *session.posargs, env={"PYLOCKDEP_PURE_PYTHON": "1"})


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff's checks and formatting, as CI requires them."""
    session.install("-q", "ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
