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

**The order and the edges kept.**  The order is every pair ``x -> y`` of live instances where
``x`` was held when ``y`` was taken.  Taking N instances in a row (``wait()`` on N futures) makes
N^2/2 such pairs, so only the edge from the *nearest* instance held (the most recent) is kept,
with a :data:`Held` cell naming every instance of the class held then; the other pairs are paths
through instances held at that time.  Two things keep every pair a path of kept edges through
live instances:

- the instances of a class a holder holds are linked in stack order by kept edges: an instance
  taken gets one from the nearest; one released from under another of its class leaves an edge
  from the one below it to the one above it (the checks replay the stack above it, or
  :func:`pylockdep._held.remove` adds it for a run);
- a search that meets an instance whose lock died replaces the edge into it (from ``x``) by edges
  to the instances after it that were taken while ``x`` was held (the cells say which): pairs
  the order holds directly, which the dead instance only stood for.

So a search finds the same cycles as over all pairs, and a kept path is always a chain of pairs.

What this gains: no report for consistent orders among many instances of one class.  What it
loses: an inversion is found only between instances that actually met in both orders during the
run (lockdep's class rule would flag the first nesting of any two), and a cycle that passes
through other classes is still judged class by class, as lockdep does.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._classes import LockClass
from ._frames import Stack
from ._held import H_CLASS, H_LOCK, H_TRYLOCK, HeldLock

if TYPE_CHECKING:
    from ._task import Task


@dataclass(eq=False)
class InstanceEdge:
    """``prev -> next``: ``next`` was taken while ``prev`` was held, by ``thread`` at ``stack``."""

    prev: Instance
    next: Instance
    stack: Stack
    thread: str
    origin: str | None


#: The instances of a class held when one was taken, the most recent first: ``(instance, rest)``
#: cells ending in None, shared from one acquisition to the next.
Held = tuple["Instance", "Held"] | None

#: One acquisition's account of the edges it made: its stack, thread and origin (as
#: :class:`InstanceEdge` has them) and the instances of the class it was taken under (:data:`Held`).
Witness = tuple[Stack, str, "str | None", Held]


@dataclass(eq=False)
class Instance:
    """One lock instance in the order of its class; ``after`` maps each instance taken while this
    one was held, and kept as an edge, to its acquisition's :data:`Witness`; ``place`` says where
    it was when last named in a cell of held instances (:meth:`InstanceOrder.held_by`): the
    holder's ``id()``, the class and the place in the holder's stack; ``cell`` is that cell,
    given again to the next acquisition that names this instance over the same cell below, so
    that the same instances taken again in the same order are one cell, told the same by
    identity (:func:`same_instances` stops there at once).  ``chains`` maps each chain key this
    instance was validated on to the instances of its class held under it then (see
    :meth:`pylockdep.Validator.remember_instances`): kept here, they go with the lock."""

    ref: weakref.ref
    address: int
    after: dict[Instance, Witness] = field(default_factory=dict)
    place: tuple[int, LockClass, int] | None = None
    cell: Held = None
    chains: dict[int, Held] | None = None

    @property
    def alive(self) -> bool:
        return self.ref() is not None


def same_instances(cell: Held, other: Held) -> bool:
    """Whether two cells name the same instances in the same order."""
    while cell is not other:
        if cell is None or other is None or cell[0] is not other[0]:
            return False
        cell, other = cell[1], other[1]
    return True


def nodes(cell: Held) -> list[Instance]:
    """The instances ``cell`` names, the most recent first."""
    found = []
    while cell is not None:
        found.append(cell[0])
        cell = cell[1]
    return found


#: What :meth:`InstanceOrder.held_by` found last for a holder (``Task.nearest``): the place in its
#: stack of the nearest instance of a class, that entry itself, the cell naming that instance and
#: every instance of the class below it, and whether an entry there holds a lock of another class
#: of the same lock type.
Nearest = tuple[int, HeldLock, Held, bool]


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

    def forget_chains(self) -> None:
        """Forget the chains every instance was validated on (see :attr:`Instance.chains`)."""
        for node in list(self._nodes.values()):
            node.chains = None

    def known(self, lock: Any) -> Instance | None:
        """The node of ``lock`` if it has one (none is made)."""
        node = self._nodes.get(id(lock))
        return node if node is not None and node.ref() is lock else None

    def held_by(self, t: Task, cls: LockClass, lock: Any) -> tuple[Held, bool]:
        """The cell naming the instances of ``cls`` that ``t`` holds, ``lock`` excepted, the most
        recent first (None when it holds none), and whether ``t`` may hold ``lock`` itself: False
        proves that no entry of its stack does, under any class.

        The cell found last (``t.nearest``) is used again while the entry it was found for is in
        its place (that very entry: one pushed again there, of the same lock and chain key, may
        be of another subclass, or over other instances of its class), and no trylock took it:
        then the instances below it are those the cell names.  An instance taken over instances of its
        class otherwise comes through here, which replaces the cell; what moves entries down
        (:func:`pylockdep._held.remove`) and what takes locks unchecked
        (:class:`pylockdep.lockdep_off`, a report being delivered) forget it.  Only the entries
        above it are read, so a holder taking instance after instance
        (``concurrent.futures.wait()`` on a thousand futures) does not scan its stack each time.
        Whether ``lock`` is among the instances below is told by its node's ``place``, which
        every instance named in a cell gets: a place in this holder's stack that does not hold
        it proves it is not held there.  It could be held under another class only of its lock
        type (:func:`pylockdep.set_class` keeps the type), which the kept cell says whether any
        entry below has.  (A handler that takes a lock while the thread checks is not seen: no
        rule is run for its locks either.)
        """
        held = t.held
        ltype = cls.ltype
        top = len(held) - 1
        others = False  # an entry of another class of the lock's type is held
        while top >= 0 and (other := held[top][H_CLASS]) is not cls:
            others = others or other.ltype is ltype
            top -= 1
        if top < 0:
            return None, others
        found = t.nearest
        if found is not None and found[0] <= top:
            start, entry, cell, below = found
            place = self.node(lock).place  # (see _name)
            if (
                held[start] is entry
                and entry[H_CLASS] is cls
                and (
                    place is None
                    or place[:2] == (id(t), cls)
                    and not (place[2] <= start and held[place[2]][H_LOCK] is lock)
                )
            ):
                for i in range(start + 1, top + 1):
                    entry = held[i]
                    if entry[H_CLASS] is cls:
                        if entry[H_LOCK] is lock:
                            break
                        cell = self._name(t, cls, entry, i, cell)
                    elif entry[H_CLASS].ltype is ltype:
                        below = True
                else:
                    t.nearest = self._found(held[top], top, cell, below)
                    return cell, others or below
        cell = None
        below = excepted = False
        for i in range(top + 1):
            entry = held[i]
            if entry[H_CLASS] is cls:
                if entry[H_LOCK] is lock:
                    excepted = True
                else:
                    cell = self._name(t, cls, entry, i, cell)
            elif entry[H_CLASS].ltype is ltype:
                below = True
        t.nearest = None if excepted else self._found(held[top], top, cell, below)
        return cell, excepted or others or below

    @staticmethod
    def _found(entry: HeldLock, place: int, cell: Held, others: bool) -> Nearest | None:
        """What ``t.nearest`` keeps of ``cell``, found for ``entry`` at ``place`` (nothing for a
        trylock's entry, which may be taken again unchecked)."""
        return None if entry[H_TRYLOCK] else (place, entry, cell, others)

    def _name(self, t: Task, cls: LockClass, entry: HeldLock, place: int, below: Held) -> Held:
        """The cell naming ``entry``'s lock (held at ``place``) over ``below``, its node told where it is."""
        node = self.node(entry[H_LOCK])
        node.place = (id(t), cls, place)
        cell = node.cell
        if cell is None or cell[1] is not below:
            cell = node.cell = (node, below)
        return cell

    def reachable(self, start: Instance) -> dict[Instance, Instance | None]:
        """Every live instance reachable from ``start`` (itself included), each mapped to its
        parent on a shortest path (None for ``start``), by a breadth-first search that bypasses
        the dead instances it meets (:meth:`bypass`)."""
        parent: dict[Instance, Instance | None] = {start: None}
        queue = deque([start])
        named: dict[int, tuple[Held, set[Instance]]] = {}  # for bypass(): each cell's instances, once
        while queue:
            node = queue.popleft()
            for succ in [succ for succ in node.after if not succ.alive]:
                self.bypass(node, succ, named)
            for succ in node.after:
                if succ not in parent:
                    parent[succ] = node
                    queue.append(succ)
        return parent

    def bypass(self, node: Instance, dead: Instance, named: dict[int, tuple[Held, set[Instance]]]) -> None:
        """Replace ``node -> dead`` (whose lock died) by an edge from ``node`` to each live instance
        after ``dead`` (through dead ones too) that was taken while ``node`` was held: the pairs
        of the order that ``dead`` stood for.  ``named`` keeps the instances of each witness's cell
        for the search that calls this, by the cell's id (with the cell, so that the id stays its
        own): one acquisition under a thousand held instances is the witness of a thousand edges,
        each naming them all, and every instance held then may meet them."""
        del node.after[dead]
        seen = {dead}
        todo = [dead]
        while todo:
            for succ, witness in todo.pop().after.items():
                if succ in seen or succ is node:
                    continue
                cell = witness[3]
                found = named.get(id(cell))
                if found is None:
                    found = named[id(cell)] = (cell, set(nodes(cell)))
                if node not in found[1]:
                    continue
                if succ.alive:
                    node.after.setdefault(succ, witness)
                else:
                    seen.add(succ)
                    todo.append(succ)

    def find_path(self, start: Instance, target: Instance) -> list[InstanceEdge] | None:
        """The shortest chain of edges from ``start`` to ``target`` through live instances, or None."""
        parent = self.reachable(start)
        if target not in parent or target is start:
            return None
        path = []
        node = target
        while (prev := parent[node]) is not None:
            path.append(InstanceEdge(prev, node, *prev.after[node][:3]))
            node = prev
        return path[::-1]

    def add(self, prev: Instance, nxt: Instance, witness: Witness) -> bool:
        """Record ``prev -> nxt``; False when it was already known."""
        if nxt in prev.after:
            return False
        prev.after[nxt] = witness
        return True

    def bridge(self, below: Any, removed: Any, above: Any) -> None:
        """``removed`` was released from between ``below`` and ``above`` (held instances of its
        class, nearest on each side): link them, as ``removed`` did, with the edge into ``above``'s
        witness (``below`` was held when ``above`` was taken)."""
        nxt = self.node(above)
        witness = self.node(removed).after.get(nxt)
        if witness is not None:
            self.add(self.node(below), nxt, witness)
