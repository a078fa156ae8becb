"""Failpoints: named places where a test can make a process die, to prove crash safety.

The product only names the places and calls `hit(name)` at each; what happens there is
installed by the development harness (conveyor_dev.inject.failpoint_actions: `CONVEYOR_FAILPOINTS=
api.after_commit=kill` makes the API SIGKILL itself right after a submit commits and before its
message is sent, the window the outbox relay exists for). A deployed image holds no such code:
there `hit` is one call that finds no action. The same technique as TiKV's fail-rs or FreeBSD's
fail(9), kept to what the crash tests need.

There is one at every step boundary of a task's life, named for the transition it cuts when
more than one process runs that transition; tests/chaos/test_failpoint_kills.py kills the
process at each and checks what the restarted system makes of it. The table follows the
transitions of conveyor.tasks.lifecycle, which says for each what a kill there leaves behind
and who finishes it.

| failpoint              | transition  | process      | the process dies                         |
|------------------------|-------------|--------------|------------------------------------------|
| api.before_commit      | submit      | api          | with a valid submit, nothing written     |
| api.after_commit       | submit      | api          | after the commit, before the send        |
| api.after_send         | submit      | api          | after the send (the claim clears the     |
|                        |             |              | mark, not the API)                       |
| enqueue.after_send     | enqueue     | relay, cli   | after sending a PENDING task's message,  |
|                        |             |              | before recording QUEUED (its mark stays) |
| schedule.after_submit  | (schedule   | relay        | after a slot's task is submitted, before |
|                        | firing)     |              | the schedule's next slot is advanced     |
| worker.after_receive   | claim       | worker       | with a message received, before a claim  |
| worker.after_claim     | claim       | worker       | after the claim (RUNNING, lease), before |
|                        |             |              | the handler                              |
| worker.mid_handler     | (the run)   | worker       | inside the handler, at its first wait    |
| worker.after_effect    | complete    | worker       | after the handler returned, before the   |
|                        |             |              | completion is recorded                   |
| worker.after_complete  | complete,   | worker       | after the outcome, before the message is |
|                        | fail        |              | deleted                                  |
| dead_letter.after_dead | dead_letter,| worker,      | after DEAD is recorded, before the DLQ   |
|                        | compensate  | relay        | message and the delete                   |
| redrive.after_pending  | redrive     | cli          | after DEAD -> PENDING (with a mark),     |
|                        |             |              | before the send                          |
| redrive.after_send     | redrive     | cli          | after the send, before the DLQ message   |
|                        |             |              | is deleted                               |
"""

from __future__ import annotations

from collections.abc import Callable

POINTS = frozenset(
    {
        "api.before_commit",
        "api.after_commit",
        "api.after_send",
        "worker.after_receive",
        "worker.after_claim",
        "worker.mid_handler",
        "worker.after_effect",
        "worker.after_complete",
        "dead_letter.after_dead",
        "enqueue.after_send",
        "redrive.after_pending",
        "redrive.after_send",
        "schedule.after_submit",
    }
)

# name -> what to do there; empty unless a harness installed actions (`install`).
_actions: dict[str, Callable[[], None]] = {}


def install(actions: dict[str, Callable[[], None]]) -> None:
    """Arm `actions` (failpoint name -> action) in this process; every name must be in POINTS."""
    unknown = set(actions) - POINTS
    if unknown:
        raise ValueError(
            f"unknown failpoints {sorted(unknown)} (known: {', '.join(sorted(POINTS))})"
        )
    _actions.clear()
    _actions.update(actions)


def hit(name: str) -> None:
    action = _actions.get(name)
    if action is not None:
        action()
