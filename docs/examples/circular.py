import threading

accounts_lock = threading.Lock()
audit_lock = threading.Lock()


def transfer():
    with accounts_lock, audit_lock:
        pass


def report():
    with audit_lock, accounts_lock:  # the opposite order
        pass


for work in (transfer, report):  # the threads never overlap: no hang, still a report
    t = threading.Thread(target=work, name=work.__name__)
    t.start()
    t.join()
