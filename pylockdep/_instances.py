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

import math
import weakref
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._classes import LockClass
from ._frames import Stack
from ._graph import _BY_ORD
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
    :meth:`pylockdep.Validator.remember_instances`): kept here, they go with the lock.  ``ord`` is
    its label in the order of the instances (:class:`InstanceOrder`), None until its first edge."""

    ref: weakref.ref
    address: int
    after: dict[Instance, Witness] = field(default_factory=dict)
    place: tuple[int, LockClass, int] | None = None
    cell: Held = None
    chains: dict[int, Held] | None = None
    ord: float | None = None

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


#: How many instances a search for a cycle must find before the instances are kept in order.
ORDER_AFTER = 64


#: What :meth:`InstanceOrder.held_by` found last for a holder (``Task.nearest``): the place in its
#: stack of the nearest instance of a class, that entry itself, the cell naming that instance and
#: every instance of the class below it, and whether an entry there holds a lock of another class
#: of the same lock type.
Nearest = tuple[int, HeldLock, Held, bool]


class InstanceOrder:
    """The instance order of every class a validator has seen nested with itself."""

    def __init__(self) -> None:
        self._nodes: dict[int, Instance] = {}
        # A topological order of the instances with edges (see reaching()): their labels,
        # ascending, and the instances (weakly: one that neither an edge nor a lock names any more
        # goes).  ``ordered`` is None until a search finds it worth keeping, then True: every
        # edge climbs it; the first edge that closes a cycle makes it False for good.
        self._labels: list[float] = []
        self._labelled: list[weakref.ref[Instance]] = []
        self._gone = 0  # how many of those are gone: once half are, they are dropped
        self.ordered: bool | None = None

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

    def reaching(self, start: Instance, targets: list[Instance]) -> dict[Instance, Instance | None]:
        """What :meth:`reachable` finds from ``start`` that may lead to one of ``targets``: all of
        it but what the order rules out (edges climb it, so from ``start`` they lead only to
        instances after it, and to one of ``targets`` only through instances before that one)."""
        if not self.ordered:
            found = self.reachable(start)
            if self.ordered is None and len(found) > ORDER_AFTER:
                self._start_order()
            return found
        if start.ord is None:  # no edge at all
            return {start: None}
        limit = max((target.ord for target in targets if target.ord is not None), default=-math.inf)
        return self.reachable(start, limit) if limit > start.ord else {start: None}

    def reachable(self, start: Instance, limit: float | None = None) -> dict[Instance, Instance | None]:
        """Every live instance reachable from ``start`` (itself included), each mapped to its
        parent on a shortest path (None for ``start``), by a breadth-first search that bypasses
        the dead instances it meets (:meth:`bypass`); with a ``limit``, only through instances
        ordered at or before it (while the order stands)."""
        parent: dict[Instance, Instance | None] = {start: None}
        queue = deque([start])
        named: dict[int, tuple[Held, set[Instance]]] = {}  # for bypass(): each cell's instances, once
        while queue:
            node = queue.popleft()
            for succ in [s for s in node.after if not s.alive and (limit is None or s.ord <= limit)]:  # type: ignore[operator]
                self.bypass(node, succ, named)
            for succ in node.after:
                if succ not in parent and (limit is None or succ.ord <= limit):  # type: ignore[operator]
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
        """Record ``prev -> nxt``, keeping the order (:meth:`_make_room`); False when it was
        already known."""
        if nxt in prev.after:
            return False
        prev.after[nxt] = witness
        self._make_room(prev, nxt)
        return True

    # -- the order -----------------------------------------------------------------------------
    #
    # A new edge is checked for a cycle by a search from its head, whose cost grows with all that
    # the head leads to: a wait() over a window of a thousand pending futures searched, at each
    # acquisition, the chains that the earlier waits made through the same futures.  So once a
    # search has found more than ORDER_AFTER instances, the instances carry a topological order,
    # as classes do (pylockdep._graph), kept by the same bounded search of Pearce and Kelly: a
    # search from the head looks only among the instances ordered before the held ones, and none
    # is needed when they are all ordered before the head.  (Before that, as for instances that
    # meet once, short-lived ones, keeping it costs more than the searches it saves.)  An
    # instance is placed at its first edge, next to the other end, so that the usual new edge,
    # into or out of an instance that had none (a future's condition taken between two others for
    # the first time), climbs.  Labels are floats; when two neighbours run out of room between
    # them every label is spread out again.

    def _start_order(self) -> None:
        """Order the instances with edges (dead ones too) by Kahn's algorithm, or never, if the
        edges already close a cycle."""
        found: dict[Instance, int] = {}  # each instance with edges: how many edges lead into it
        todo = [node for node in self._nodes.values() if node.after]
        for node in todo:
            found.setdefault(node, 0)
        while todo:
            for succ in todo.pop().after:
                if succ not in found:
                    found[succ] = 0
                    todo.append(succ)
                found[succ] += 1
        order = [node for node, count in found.items() if not count]
        for node in order:  # (the list grows as it is read)
            for succ in node.after:
                found[succ] -= 1
                if not found[succ]:
                    order.append(succ)
        if len(order) < len(found):
            self.ordered = False
            return
        self._labels = [float(k) for k in range(len(order))]
        self._labelled = [weakref.ref(node, self._went) for node in order]
        for k, node in enumerate(order):
            node.ord = float(k)
        self.ordered = True

    def _make_room(self, prev: Instance, nxt: Instance) -> None:
        """Keep the order for the new edge ``prev -> nxt``: place whichever end has no place yet
        next to the other; if the edge goes against the order, move what edges lead to from
        ``nxt`` among the instances before ``prev`` (``nxt`` included) to just after ``prev``, in
        their order: every other edge into or out of them still climbs.  If that leads to
        ``prev``, the edge closes a cycle and the order ends."""
        if not self.ordered:
            return
        if prev.ord is None:
            if nxt.ord is None:
                self._place_after(self._last(), [prev, nxt])
            else:
                self._place_after(self._before(nxt), [prev])
        elif nxt.ord is None:
            self._place_after(prev, [nxt])
        elif nxt.ord < prev.ord:
            region = self._leads_to(nxt, prev)
            if region is None:
                self.ordered = False
                return
            for node in region:
                del self._labels[i := bisect_left(self._labels, node.ord)], self._labelled[i]  # type: ignore[arg-type]
            self._place_after(prev, sorted(region, key=_BY_ORD))

    @staticmethod
    def _leads_to(start: Instance, end: Instance) -> list[Instance] | None:
        """The instances ordered before ``end`` that edges lead to from ``start`` (itself
        included), or None if they lead to ``end``."""
        limit = end.ord
        seen = {start}
        todo = [start]
        while todo:
            for succ in todo.pop().after:
                if succ is end:
                    return None
                if succ not in seen and succ.ord < limit:  # type: ignore[operator]
                    seen.add(succ)
                    todo.append(succ)
        return list(seen)

    def _last(self) -> Instance | None:
        """The last instance of the order that still exists, if any."""
        while self._labelled:
            node = self._labelled[-1]()
            if node is not None:
                return node
            del self._labelled[-1], self._labels[-1]
        return None

    def _before(self, node: Instance) -> Instance | None:
        """The instance just before ``node`` in the order that still exists (None at the front)."""
        i = bisect_left(self._labels, node.ord)  # type: ignore[arg-type]
        while i > 0:
            i -= 1
            if (before := self._labelled[i]()) is not None:
                return before
        return None

    def _place_after(self, anchor: Instance | None, run: list[Instance]) -> None:
        """Label ``run`` (none of it in the order) in its order just after ``anchor`` (at the
        front for None), sharing the room up to the next label evenly; spread every label out
        first when that room is too small, or when half the instances are gone."""
        if self._gone > len(self._labels) // 2 + 64:
            self._spread()
        labels = self._labels
        i = 0 if anchor is None else bisect_left(labels, anchor.ord) + 1  # type: ignore[arg-type]
        low = labels[i - 1] if i else (labels[0] if labels else 0.0) - len(run) - 1
        high = labels[i] if i < len(labels) else low + len(run) + 1
        step = (high - low) / (len(run) + 1)
        if not (low < low + step and low + len(run) * step < high):
            self._spread()
            self._place_after(anchor, run)
            return
        labels[i:i] = [low + k * step for k in range(1, len(run) + 1)]
        self._labelled[i:i] = [weakref.ref(node, self._went) for node in run]
        for k, node in enumerate(run, 1):
            node.ord = low + k * step

    def _went(self, ref: weakref.ref[Instance]) -> None:
        self._gone += 1  # (a weakref callback: it may run in any thread, at any allocation)

    def _spread(self) -> None:
        """Label the instances of the order 0, 1, 2 ..., dropping those gone."""
        self._gone = 0
        kept = [ref for ref in self._labelled if ref() is not None]
        self._labelled = kept
        self._labels = [float(k) for k in range(len(kept))]
        for k, ref in enumerate(kept):
            ref().ord = float(k)  # type: ignore[union-attr]

    def bridge(self, below: Any, removed: Any, above: Any) -> None:
        """``removed`` was released from between ``below`` and ``above`` (held instances of its
        class, nearest on each side): link them, as ``removed`` did, with the edge into ``above``'s
        witness (``below`` was held when ``above`` was taken)."""
        nxt = self.node(above)
        witness = self.node(removed).after.get(nxt)
        if witness is not None:
            self.add(self.node(below), nxt, witness)
