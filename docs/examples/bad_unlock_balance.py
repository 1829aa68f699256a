import pylockdep

config_lock = pylockdep.Mutex("config_lock")

config_lock.acquire()
config_lock.release()
config_lock.release()  # once too often
