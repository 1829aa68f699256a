import gc
import queue

jobs = queue.Queue()


class Connection:
    def __init__(self):
        self.me = self  # a reference cycle: only the garbage collector frees it

    def __del__(self):
        jobs.put("closed")  # runs in whichever thread the collector interrupted


Connection()
gc.collect()  # it happened to run between two jobs
print(jobs.get())  # had it run inside get(), put() would wait for get() for ever
