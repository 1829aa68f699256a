import pylockdep

dev_lock = pylockdep.RawSpinLock("dev_lock")
list_lock = pylockdep.RawSpinLock("list_lock")

with pylockdep.irqs_disabled():
    with dev_lock, list_lock:  # dev_lock -> list_lock, interrupts off
        pass

with pylockdep.hardirq():  # dev_lock is taken by an interrupt handler
    with dev_lock:
        pass

with list_lock:  # list_lock is taken with interrupts enabled
    pass
