"""pytest plugin for pylockdep (work in progress: issue 7)."""


def pytest_addoption(parser):
    group = parser.getgroup("lockdep")
    group.addoption("--lockdep", action="store_true", default=False, help="validate lock usage with pylockdep")
