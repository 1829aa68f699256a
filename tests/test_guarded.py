"""Guarded data: attributes declared with guarded_by() report an access without their protection."""

from __future__ import annotations

import threading

import pytest

import pylockdep
from pylockdep import RCU, SRCU, Mutex, RWLock, RWSemaphore, SpinLock, guarded_by

pytestmark = pytest.mark.timeout(30)

kvm_lock = SpinLock("kvm_lock")


class KVM:
    """The shape of KVM's locking table: what protects which field."""

    memslots = guarded_by("srcu", writer="slots_lock")
    buses = guarded_by("srcu")
    online_vcpus = guarded_by("lock")
    vm_list = guarded_by(kvm_lock)
    devices = guarded_by(lambda kvm: kvm.lock)
    regions = guarded_by("mmap_sem")
    rwdata = guarded_by("rwlock")
    rcu_ptr = guarded_by(RCU)

    def __init__(self) -> None:
        self.srcu = SRCU("kvm->srcu")
        self.slots_lock = Mutex("kvm->slots_lock")
        self.lock = Mutex("kvm->lock")
        self.mmap_sem = RWSemaphore("mmap_sem")
        self.rwlock = RWLock("rwlock")
        # First assignments publish nothing yet: never checked.
        self.memslots = ["slot0"]
        self.buses = ["pio"]
        self.online_vcpus = 0
        self.vm_list = []
        self.devices = {}
        self.regions = []
        self.rwdata = 0
        self.rcu_ptr = "old"


class VCPU:
    run_state = guarded_by("kvm.lock")

    def __init__(self, kvm: KVM) -> None:
        self.kvm = kvm
        self.run_state = "stopped"


def reports(v: pylockdep.Validator) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.kind, r.classes) for r in v.reports]


def test_construction_and_protected_accesses_are_not_reported():
    with pylockdep.validate() as v:
        kvm = KVM()
        vcpu = VCPU(kvm)
        with kvm.srcu.read():
            assert kvm.memslots == ["slot0"] and kvm.buses == ["pio"]
            kvm.buses = ["pio", "mmio"]
        with kvm.slots_lock:  # the update side may read and write
            kvm.memslots = kvm.memslots + ["slot1"]
        with kvm.lock:
            kvm.online_vcpus += 1
            kvm.devices["pit"] = 1
            vcpu.run_state = "running"
        with kvm_lock:
            kvm.vm_list.append(kvm)
        with kvm.mmap_sem.read():
            assert kvm.regions == []
        with kvm.mmap_sem.write():
            kvm.regions = ["r"]
        with kvm.rwlock.read():
            assert kvm.rwdata == 0
        with kvm.rwlock.write():
            kvm.rwdata = 1
        with pylockdep.rcu_read():
            assert kvm.rcu_ptr == "old"
    assert v.reports == []


def test_srcu_guarded_read_outside_the_read_side_is_suspicious_rcu_usage():
    kvm = KVM()
    with pylockdep.validate(raise_on_report=False) as v:
        assert kvm.memslots == ["slot0"]  # the value is still returned
        _ = kvm.buses
    assert reports(v) == [
        ("suspicious_rcu_usage", ("kvm->srcu", "kvm->slots_lock")),
        ("suspicious_rcu_usage", ("kvm->srcu",)),
    ]
    text = v.reports[0].text
    assert "test_guarded.py:" in text and "suspicious rcu_dereference_check() usage!" in text
    assert "reading KVM.memslots needs a read side of kvm->srcu or kvm->slots_lock held" in text
    assert "rcu_scheduler_active = 2, debug_locks = 1" in text


def test_srcu_guarded_write_needs_the_writer_lock_not_the_read_side():
    kvm = KVM()
    with pylockdep.validate(raise_on_report=False) as v:
        with kvm.srcu.read():
            kvm.memslots = []
    assert reports(v) == [("suspicious_rcu_usage", ("kvm->slots_lock",))]
    assert "suspicious rcu_dereference_protected() usage!" in v.reports[0].text
    assert "writing KVM.memslots needs kvm->slots_lock held" in v.reports[0].text


def test_srcu_guarded_without_writer_is_written_inside_the_read_side():
    kvm = KVM()
    with pylockdep.validate(raise_on_report=False) as v:
        kvm.buses = []
        del kvm.buses
    assert reports(v) == [("suspicious_rcu_usage", ("kvm->srcu",))] * 2
    assert "(declare writer= for the lock its updaters hold)" in v.reports[0].text


def test_rcu_guarded_read_outside_rcu_read_lock():
    kvm = KVM()
    with pylockdep.validate(raise_on_report=False) as v:
        with kvm.lock:
            _ = kvm.rcu_ptr
    assert reports(v) == [("suspicious_rcu_usage", ("rcu_read_lock",))]
    assert "reading KVM.rcu_ptr needs an RCU read side" in v.reports[0].text


@pytest.mark.parametrize("write", [False, True])
def test_lock_guarded_access_without_the_lock_is_assert_held(write: bool):
    kvm = KVM()
    with pylockdep.validate(raise_on_report=False) as v:
        with kvm.slots_lock:  # another lock does not help
            if write:
                kvm.online_vcpus = 5
            else:
                _ = kvm.online_vcpus
    assert reports(v) == [("assert_held", ("kvm->lock",))]
    report = v.reports[0]
    assert report.title == "WARNING: lockdep_assert_held() failed"
    verb = "writes" if write else "reads"
    assert f"{verb} KVM.online_vcpus without holding lock:" in report.text


def test_global_callable_and_dotted_protectors():
    kvm = KVM()
    vcpu = VCPU(kvm)
    with pylockdep.validate(raise_on_report=False) as v:
        _ = kvm.vm_list
        _ = kvm.devices
        _ = vcpu.run_state
    assert reports(v) == [
        ("assert_held", ("kvm_lock",)),
        ("assert_held", ("kvm->lock",)),
        ("assert_held", ("kvm->lock",)),
    ]


@pytest.mark.parametrize("attr, lock", [("regions", "mmap_sem"), ("rwdata", "rwlock")])
def test_read_side_of_a_reader_writer_lock_allows_reads_not_writes(attr: str, lock: str):
    kvm = KVM()
    with pylockdep.validate(raise_on_report=False) as v:
        with getattr(kvm, lock).read():
            getattr(kvm, attr)
            setattr(kvm, attr, [])
    assert reports(v) == [("assert_held", (lock,))]
    assert f"writes KVM.{attr} (write side needed) without holding lock:" in v.reports[0].text


def test_holding_the_lock_in_one_thread_does_not_cover_another():
    kvm = KVM()
    holding, read = threading.Event(), threading.Event()
    values: list[int] = []

    def holder() -> None:
        with kvm.lock:
            holding.set()
            assert read.wait(10)
            values.append(kvm.online_vcpus)

    def intruder() -> None:
        assert holding.wait(10)
        values.append(kvm.online_vcpus)
        read.set()

    with pylockdep.validate(raise_on_report=False) as v:
        threads = [threading.Thread(target=holder, name="holder"), threading.Thread(target=intruder, name="intruder")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert values == [0, 0]
    (report,) = v.reports
    assert report.kind == "assert_held" and report.threads[0].startswith("intruder/")


def test_readers_in_several_threads_inside_and_outside_the_srcu_read_side():
    kvm = KVM()
    barrier = threading.Barrier(4)

    def reader(inside: bool) -> None:
        barrier.wait(10)
        for _ in range(20):
            if inside:
                with kvm.srcu.read():
                    _ = kvm.memslots
            else:
                _ = kvm.memslots

    with pylockdep.validate(raise_on_report=False) as v:
        threads = [
            threading.Thread(target=reader, args=(inside,), name=f"r{i}")
            for i, inside in enumerate([True, True, True, False])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    (report,) = v.reports  # once per call site
    assert report.kind == "suspicious_rcu_usage" and report.threads[0].startswith("r3/")


def test_each_call_site_reports_once():
    kvm = KVM()
    with pylockdep.validate(raise_on_report=False) as v:
        for _ in range(3):
            _ = kvm.online_vcpus
        _ = kvm.online_vcpus
    assert len(v.reports) == 2


def test_nothing_is_checked_once_validation_is_off():
    resolved: list[object] = []

    class Counted:
        value = guarded_by(lambda obj: resolved.append(obj) or obj.lock)

        def __init__(self) -> None:
            self.lock = Mutex("counted")
            self.value = 1

    obj = Counted()
    with pylockdep.validate(raise_on_report=False, max_lock_depth=1) as v:
        with Mutex("fills the stack"):  # reaching the depth limit turns validation off
            pass
        assert v.off
        obj.value = obj.value + 1
    assert resolved == [] and vars(obj)["value"] == 2
    assert [r.kind for r in v.reports] == ["limit_exceeded"]


def test_descriptor_on_the_class_and_plain_attribute_behaviour():
    descriptor = KVM.memslots
    assert isinstance(descriptor, pylockdep.Guarded)
    assert (descriptor.protector, descriptor.writer, descriptor.qualname) == ("srcu", "slots_lock", "KVM.memslots")
    kvm = KVM()
    with pylockdep.validate() as v:
        with kvm.lock:
            del kvm.online_vcpus
            assert not hasattr(kvm, "online_vcpus")
            with pytest.raises(AttributeError):
                del kvm.online_vcpus
        kvm.online_vcpus = 7  # first assignment again
        assert vars(kvm)["online_vcpus"] == 7
    assert v.reports == []


def test_misdeclared_protectors_are_clear_errors():
    with pytest.raises(TypeError):
        guarded_by(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        guarded_by("not an attribute")
    with pytest.raises(TypeError, match="writer="):
        guarded_by("srcu", writer=RCU)

    class Broken:
        missing = guarded_by("nope")
        not_a_lock = guarded_by("name")

        def __init__(self) -> None:
            self.name = "just a string"
            self.missing = self.not_a_lock = 0

    broken = Broken()
    with pylockdep.validate():
        with pytest.raises(TypeError, match="Broken.missing"):
            _ = broken.missing
        with pytest.raises(TypeError, match="not a lock"):
            _ = broken.not_a_lock


def test_slotted_classes_are_refused_at_first_assignment():
    class Slotted:
        __slots__ = ("lock",)
        value = guarded_by("lock")

    with pytest.raises(TypeError, match="__dict__"):
        Slotted().value = 1


@pytest.mark.usefixtures("plain_threading")
def test_python_locks_are_checked_when_instrumented_and_left_alone_otherwise():
    class Queue:
        items = guarded_by("mutex")
        waiters = guarded_by("not_empty")

        def __init__(self) -> None:
            self.mutex = threading.Lock()
            self.not_empty = threading.Condition(threading.RLock())
            self.items = []
            self.waiters = 0

    plain = Queue()
    with pylockdep.instrument_threading():
        instrumented = Queue()
    with pylockdep.validate(raise_on_report=False) as v:
        with instrumented.mutex, instrumented.not_empty:
            instrumented.items = [1]
            instrumented.waiters += 1
        _ = plain.items  # CPython's own lock: nothing to check against
        _ = instrumented.items
        _ = instrumented.waiters
    assert [r.kind for r in v.reports] == ["assert_held", "assert_held"]
    # The attribute a lock is stored in names its class; a lock passed on directly keeps its type.
    assert [r.classes[0].split("@")[0] for r in v.reports] == ["Queue.mutex", "RLock"]


def test_writer_alone_leaves_reads_lockless_and_checks_writes():
    class Vm:
        vcpus = guarded_by(writer="lock")  # kvm_get_vcpu() reads without kvm->lock

        def __init__(self) -> None:
            self.lock = Mutex("kvm->lock")
            self.vcpus = ()

    vm = Vm()
    with pylockdep.validate(raise_on_report=False) as v:
        _ = vm.vcpus
        with vm.lock:
            vm.vcpus = ("vcpu0",)
        vm.vcpus = ()
    assert reports(v) == [("assert_held", ("kvm->lock",))]
    with pytest.raises(TypeError, match="protector"):
        guarded_by()
