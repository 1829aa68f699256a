"""The order of instances of one lock class: how Python's locks of one class may nest.

Lockdep reports a class taken while the same class is held (``recursive``) unless a nesting
subclass says otherwise: in the kernel, locks of one class nest only by annotation.  Python code
nests them freely and correctly: ``concurrent.futures.wait()`` takes every future's condition
sorted by ``id()``, a logging ``MemoryHandler`` flushes into its target handler, a bank transfer
takes two accounts' locks in a fixed order.  So for Python's lock types the validator judges such
nesting per *instance*: holding ``x`` while taking ``y`` (both of class C) records ``x -> y`` here,
and only an order that closes a cycle of instances (``y -> x`` somewhere, any time, in any thread,
or a longer ring as dining philosophers make) is a potential deadlock.

One :class:`InstanceOrder` per validator keeps a small graph per class: nodes are live lock
instances (held by weak reference, so a lock that dies takes its edges with it and a new lock at
the same address starts afresh), edges remember the thread and stack that made them.  Like
:mod:`pylockdep._graph`, a new edge is checked by a breadth-first search from its head for its
tail before it is added; unlike it, the search stays inside one class, and it runs on every
same-class nesting (such chains are never cached: the class chain is the same in both orders).

What this gains: no report for consistent orders among many instances of one class.  What it
loses: an inversion is found only between instances that actually met in both orders during the
run (lockdep's class rule would flag the first nesting of any two), and a cycle that passes
through other classes is still judged class by class, as lockdep does.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ._frames import Stack


@dataclass(eq=False)
class InstanceEdge:
    """``prev -> next``: ``next`` was taken while ``prev`` was held, by ``thread`` at ``stack``."""

    prev: Instance
    next: Instance
    stack: Stack
    thread: str
    origin: str | None


#: Who made an edge, where and in which run (:attr:`InstanceEdge.stack`, ``thread``, ``origin``):
#: one tuple for every edge that one acquisition adds, so an edge costs a dictionary entry.
Witness = tuple[Stack, str, "str | None"]


@dataclass(eq=False)
class Instance:
    """One live lock instance in the order of its class; ``after`` maps each instance taken while
    this one was held to the :data:`Witness` of that edge."""

    ref: weakref.ref
    address: int
    after: dict[Instance, Witness] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.ref() is not None


class InstanceOrder:
    """The instance order of every class a validator has seen nested with itself."""

    def __init__(self) -> None:
        self._nodes: dict[int, Instance] = {}

    def node(self, lock: Any) -> Instance:
        """The node of ``lock``, made on first use (or again, for a new lock at a dead one's address)."""
        address = id(lock)
        node = self._nodes.get(address)
        if node is None or node.ref() is not lock:
            nodes = self._nodes

            def forget(ref: weakref.ref) -> None:
                current = nodes.get(address)
                if current is not None and current.ref is ref:
                    nodes.pop(address, None)

            node = nodes[address] = Instance(weakref.ref(lock, forget), address)
        return node

    def reachable(self, start: Instance) -> dict[Instance, Instance | None]:
        """Every live instance reachable from ``start`` (itself included), each mapped to its
        parent on a shortest path (None for ``start``), by a breadth-first search that drops the
        edges into dead instances it meets."""
        parent: dict[Instance, Instance | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for succ in list(node.after):
                if not succ.alive:
                    del node.after[succ]
                elif succ not in parent:
                    parent[succ] = node
                    queue.append(succ)
        return parent

    def find_path(self, start: Instance, target: Instance) -> list[InstanceEdge] | None:
        """The shortest chain of edges from ``start`` to ``target`` through live instances, or None."""
        parent = self.reachable(start)
        if target not in parent or target is start:
            return None
        path = []
        node = target
        while (prev := parent[node]) is not None:
            path.append(InstanceEdge(prev, node, *prev.after[node]))
            node = prev
        return path[::-1]

    def add(self, prev: Instance, nxt: Instance, witness: Witness) -> bool:
        """Record ``prev -> nxt``; False when it was already known."""
        if nxt in prev.after:
            return False
        prev.after[nxt] = witness
        return True
