import concurrent.futures
import threading

log_lock = threading.Lock()
exporter = concurrent.futures.ThreadPoolExecutor(max_workers=2)


def export():
    with log_lock:  # the export logs
        pass


def flush(pending):
    """Wait for the pending export while holding the logging lock (OpenTelemetry SDK 1.35.0's shape)."""
    with log_lock:
        pending.result()


pending = exporter.submit(export)
concurrent.futures.wait([pending])  # here the export is done before the flush: no hang, still a report
flush(pending)
exporter.shutdown()
