"""Shared test configuration: pytester for the tests of the pytest plugin, and ``plain_threading``."""

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def plain_threading(request: pytest.FixtureRequest) -> None:
    """Skip a test that needs CPython's own threading locks: one that compares instrumented locks
    with plain ones, or sets an Event inside an RCU read side as a harness.  Under
    ``pytest --lockdep-threading`` every lock of the session is instrumented."""
    if request.config.getoption("lockdep_threading", False):
        pytest.skip("needs CPython's plain threading locks; --lockdep-threading instruments them all")
