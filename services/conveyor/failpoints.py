"""Failpoints: named places where a test can make a process die, to prove crash safety.

The product only names the places and calls `hit(name)` at each; what happens there is
installed by the development harness (conveyor_dev.inject.failpoint_actions: `CONVEYOR_FAILPOINTS=
api.after_commit=kill` makes the API SIGKILL itself right after a submit commits and before its
message is sent, the window the outbox relay exists for). A deployed image holds no such code:
there `hit` is one call that finds no action. The same technique as TiKV's fail-rs or FreeBSD's
fail(9), kept to what the crash tests need.

There is one at every step boundary of a task's life; tests/chaos/test_failpoint_kills.py
kills the process at each and checks what the restarted system makes of it.

| failpoint                   | process | the process dies                                       |
|-----------------------------|---------|--------------------------------------------------------|
| api.before_commit           | api     | with a valid submit in hand, nothing written           |
| api.after_commit            | api     | after the commit (task, key, event, mark), before send |
| api.after_send              | api     | after the send (the claim clears the mark, not the API)|
| worker.after_receive        | worker  | with a message received, before the claim              |
| worker.after_claim          | worker  | after the claim (RUNNING, lease), before the handler   |
| worker.mid_handler          | worker  | inside the handler, at its first `ctx.wait()`          |
| worker.after_effect         | worker  | after the handler returned, before the completion      |
| worker.after_complete       | worker  | after the completion, before the message is deleted    |
| worker.after_dlq_send       | worker  | after the dead-letter send, before DEAD is recorded    |
| relay.after_send            | relay   | after relaying a mark's message, before clearing it    |
| relay.mid_compensation      | relay   | after marking a redriven-by-policy task DEAD, before   |
|                             |         | re-filing and deleting its DLQ message                 |
| redrive.after_pending       | cli     | after DEAD -> PENDING (with a mark), before the send   |
| redrive.after_send          | cli     | after the send, before the DLQ message is deleted      |
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
        "worker.after_dlq_send",
        "relay.after_send",
        "relay.mid_compensation",
        "redrive.after_pending",
        "redrive.after_send",
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
