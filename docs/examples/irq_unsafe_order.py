import pylockdep

dev_lock = pylockdep.RawSpinLock("dev_lock")
list_lock = pylockdep.RawSpinLock("list_lock")

with pylockdep.hardirq():  # dev_lock is taken by an interrupt handler
    with dev_lock:
        pass

with list_lock:  # list_lock is taken with interrupts enabled
    pass

with dev_lock.irqsave():
    with list_lock:  # an irq-safe lock, then an irq-unsafe one
        pass
