"""Cutting a call trace at a thread's entry function (for splats of identified threads)."""

from __future__ import annotations

import threading

from pylockdep._frames import capture_stack, split_at_entry


def inner() -> tuple:
    return capture_stack()


def entry(out: list) -> None:
    out.append(inner())


def test_the_trace_ends_with_the_entry_function_and_the_rest_follows():
    out: list = []
    thread = threading.Thread(target=lambda: entry(out))
    thread.start()
    thread.join()
    (stack,) = out
    kernel, python = split_at_entry(stack, entry.__code__)
    assert [code.co_name for code, _ in kernel] == ["inner", "entry"]
    assert python and python[-1][0].co_name == "_bootstrap"


def test_without_an_entry_nothing_is_cut():
    stack = inner()
    assert split_at_entry(stack, None) == (stack, ())
    assert split_at_entry(stack, entry.__code__) == (stack, ())
