import pylockdep

queue_lock = pylockdep.SpinLock("queue_lock")


def allocate_buffer():
    pylockdep.might_sleep()  # says: this may block (an allocation, I/O, a sleeping lock)
    return bytearray(4096)


with queue_lock:
    allocate_buffer()
