import pylockdep

slots_srcu = pylockdep.SRCU("slots_srcu")
memslots = {"base": 0}

with slots_srcu.read():
    slots = slots_srcu.dereference(memslots)  # fine: inside the read side

slots = slots_srcu.dereference(memslots)  # outside every read side
