import pylockdep

irq_controller = pylockdep.RawSpinLock("irq_controller")
stats = pylockdep.SpinLock("stats")

with irq_controller:
    with stats:  # a spinlock_t sleeps on PREEMPT_RT: not inside a raw_spinlock_t
        pass
