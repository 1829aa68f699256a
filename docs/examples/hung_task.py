import queue
import threading

import pylockdep

jobs = queue.Queue()


def worker():
    while (job := jobs.get()) is not None:
        print("did", job)


thread = threading.Thread(target=worker, name="worker", daemon=True)
thread.start()
jobs.put("the only job")
# The producer forgot jobs.put(None): the worker waits for a job for ever, and so does the join.
try:
    thread.join()
except pylockdep.DeadlockError as error:
    print(error)
