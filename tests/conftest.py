"""Shared test configuration: pytester, for the tests of the pytest plugin."""

pytest_plugins = ["pytester"]
