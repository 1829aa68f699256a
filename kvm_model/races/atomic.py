"""A 64-bit memory cell that is read and written only through explicit, named operations.

The cell stands for one word of kernel memory (an SPTE, a word of a dirty bitmap).  Each operation says which
machine access the kernel made: a plain ``load``/``store`` (two of them can interleave with anything), or an
atomic read-modify-write (``cmpxchg``, ``xchg``, ``fetch_or``, ``clear_bit``).  Atomicity comes from a bare
CPython lock (:mod:`pylockdep._plain`): these are atomics, not locks, so pylockdep must neither see nor validate them.
"""

from __future__ import annotations

from pylockdep import _plain

_MASK64 = (1 << 64) - 1


class Atomic64:
    """One 64-bit word.  Every method is a single indivisible access to it."""

    __slots__ = ("_value", "_guard")

    def __init__(self, value: int = 0) -> None:
        self._value = value & _MASK64
        self._guard = _plain.plain_lock()

    def load(self) -> int:
        """A plain (volatile) read of the whole word."""
        return self._value

    def store(self, value: int) -> None:
        """A plain write of the whole word: it overwrites whatever another CPU changed since our last load."""
        self._value = value & _MASK64

    def cmpxchg(self, expected: int, new: int) -> bool:
        """Write ``new`` only if the word still equals ``expected``; return whether it did."""
        with self._guard:
            if self._value != expected:
                return False
            self._value = new & _MASK64
            return True

    def xchg(self, new: int) -> int:
        """Write ``new`` and return the value it replaced, in one access."""
        with self._guard:
            old, self._value = self._value, new & _MASK64
            return old

    def fetch_or(self, bits: int) -> int:
        """Set ``bits`` (a locked OR, as the processor sets Accessed/Dirty) and return the previous value."""
        with self._guard:
            old = self._value
            self._value = old | (bits & _MASK64)
            return old

    def clear_bit(self, bit: int) -> None:
        """Atomically clear bit number ``bit`` (the kernel's ``clear_bit``)."""
        with self._guard:
            self._value &= ~(1 << bit) & _MASK64

    def __repr__(self) -> str:
        return f"Atomic64({self._value:#x})"
