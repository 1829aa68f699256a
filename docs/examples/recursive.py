import pylockdep


class Inode:
    def __init__(self, name):
        self.name = name
        self.lock = pylockdep.Mutex("inode.lock")  # every inode's lock: one class


parent, child = Inode("dir"), Inode("file")
with parent.lock:
    with child.lock:  # the same class again, without saying why it is safe
        pass
