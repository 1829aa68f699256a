import pylockdep

table_lock = pylockdep.Mutex("table_lock")
table = {}


def insert(key, value):
    pylockdep.lockdep_assert_held(table_lock)  # the caller must hold table_lock
    table[key] = value


with table_lock:
    insert("a", 1)
insert("b", 2)  # called without it
