import threading


class Display:
    """A live display (the shape of rich 9.8.1's Live): a thread draws it under its lock."""

    def __init__(self):
        self._lock = threading.RLock()
        self._drawn = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="refresher")

    def _refresh(self):
        with self._lock:
            pass  # draw
        self._drawn.set()
        self._stop.wait()

    def start(self):
        self._thread.start()
        self._drawn.wait()  # here the drawing is over before stop(): no hang, still a report

    def stop(self):
        with self._lock:
            self._stop.set()
            self._thread.join()  # waits for a thread that takes self._lock


display = Display()
display.start()
display.stop()
