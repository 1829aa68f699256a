import threading

registry_lock = threading.RLock()


def register():
    registry_lock.acquire()
    if True:  # an early return on an error path forgets the release
        return


t = threading.Thread(target=register, name="worker")
t.start()
t.join()
