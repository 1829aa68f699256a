import queue
import signal

jobs = queue.Queue()


def on_hangup(signum, frame):
    jobs.put("reload")  # runs in the main thread, wherever it was


signal.signal(signal.SIGHUP, on_hangup)
signal.raise_signal(signal.SIGHUP)  # it happened to land between two jobs
print(jobs.get())  # had it landed inside get(), put() would wait for get() for ever
