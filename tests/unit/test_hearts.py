"""A task's heartbeat loops start when their first beat is due (conveyor.worker.hearts). What
the loops do (extend the lease and the visibility, stop a cancelled or lost run) is covered
against the emulator in tests/store/test_store_worker.py."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from conveyor.worker import hearts as hearts_module
from conveyor.worker.hearts import Hearts, HeartStarter

LATER = 3600.0  # a first beat no test waits for


class _State:
    """Stands for a run's state (its task and payload) held by a loop's arguments."""


def _noop(ran: threading.Event, state: _State) -> None:
    ran.set()


def _loop(started: threading.Event, done: threading.Event, stopped: threading.Event) -> None:
    started.set()
    done.wait()
    stopped.set()


def test_a_task_done_before_its_loop_starts_starts_none_and_keeps_nothing():
    """A finished task's waiting loops are dropped at once, with their arguments (the run and
    its payload), not when their start would have come (seen failing with them kept)."""
    starter, done = HeartStarter(), threading.Event()
    hearts = Hearts(done)
    ran = threading.Event()
    state = _State()
    kept = weakref.ref(state)
    starter.schedule(time.monotonic() + LATER, hearts, _noop, (ran, state))
    del state
    hearts.finish()
    assert done.is_set()
    gc.collect()
    assert kept() is None, "a finished task's state is kept until its loop's start time"
    assert hearts.started == 0 and not ran.is_set()


def test_a_loop_whose_thread_cannot_start_is_started_on_a_later_try(monkeypatch):
    """No thread to be had (RuntimeError: can't start new thread) drops no loop: the starter
    tries again (seen failing with the loop dropped after the error)."""
    failures = [RuntimeError("can't start new thread")]

    class Flaky(threading.Thread):
        def start(self) -> None:
            if self.name == "heartbeat" and failures:
                raise failures.pop()
            super().start()

    monkeypatch.setattr(hearts_module.threading, "Thread", Flaky)
    starter, done = HeartStarter(), threading.Event()
    hearts = Hearts(done)
    started, stopped = threading.Event(), threading.Event()
    starter.schedule(time.monotonic(), hearts, _loop, (started, done, stopped))
    assert started.wait(30), "the loop was dropped after its thread could not start"
    assert not failures
    hearts.finish()
    assert stopped.is_set()


def test_a_due_loop_starts_and_the_task_s_finish_stops_and_joins_it():
    starter, done = HeartStarter(), threading.Event()
    hearts = Hearts(done)
    started, stopped = threading.Event(), threading.Event()
    starter.schedule(time.monotonic(), hearts, _loop, (started, done, stopped))
    assert started.wait(30), "a loop due now did not start"
    assert hearts.started == 1
    hearts.finish()
    assert stopped.is_set()  # joined: it ended before finish returned


class _WatchedCondition(threading.Condition):
    """`waiting_long` is set once the starter waits for a loop due a long time from now."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting_long = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None and timeout > LATER / 2:
            self.waiting_long.set()  # the lock is still held: a schedule comes after the wait
        return super().wait(timeout)


class _WatchedStarter(HeartStarter):
    @property  # type: ignore[override]
    def _wake(self) -> _WatchedCondition:
        return self._watched

    @_wake.setter
    def _wake(self, _: threading.Condition) -> None:
        self._watched = _WatchedCondition()


def test_a_loop_due_sooner_than_the_one_waited_for_starts_first():
    """The starter waits for the earliest loop; one scheduled later but due sooner wakes it
    (seen failing with the wake-up only when nothing was scheduled)."""
    starter = _WatchedStarter()
    late_done, soon_done = threading.Event(), threading.Event()
    late_started, soon_started, stopped = threading.Event(), threading.Event(), threading.Event()
    starter.schedule(
        time.monotonic() + LATER, Hearts(late_done), _loop, (late_started, late_done, stopped)
    )
    assert starter._watched.waiting_long.wait(30), "the starter did not wait for the late loop"
    soon = Hearts(soon_done)
    starter.schedule(time.monotonic(), soon, _loop, (soon_started, soon_done, stopped))
    assert soon_started.wait(30), "the loop due now waited behind the later one"
    assert not late_started.is_set()
    soon.finish()
    late_done.set()
