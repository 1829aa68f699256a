import pylockdep

pylockdep.preempt_disable()
pylockdep.preempt_enable()
pylockdep.preempt_enable()  # one more than was disabled
