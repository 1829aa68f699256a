import pylockdep

counter_lock = pylockdep.RawSpinLock("counter_lock")

with counter_lock:  # process context, interrupts enabled
    pass

with pylockdep.hardirq():  # the same lock in an interrupt handler
    with counter_lock:
        pass
