"""Failpoints: named places where a test can make a process die, to prove crash safety.

`CONVEYOR_FAILPOINTS=api.after_commit=kill` makes the API SIGKILL itself right after a submit
commits and before its message is sent: the window the outbox relay exists for. Unset (the
default, and always in deployed stacks) a failpoint costs one dict lookup. The same technique
as TiKV's fail-rs or FreeBSD's fail(9), kept to what the crash tests need. An unknown name or
action fails start-up: a misspelt failpoint would otherwise test nothing, silently.

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

import os
import signal

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
_ACTIONS = {"kill": lambda: os.kill(os.getpid(), signal.SIGKILL)}


def _parse(spec: str) -> dict[str, str]:
    points = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = part.partition("=")
        if name not in POINTS:
            raise ValueError(f"failpoint {name!r}: unknown (known: {', '.join(sorted(POINTS))})")
        if action not in _ACTIONS:
            raise ValueError(f"failpoint {name!r}: unknown action {action!r} (known: kill)")
        points[name] = action
    return points


_ARMED = _parse(os.environ.get("CONVEYOR_FAILPOINTS", ""))


def hit(name: str) -> None:
    action = _ARMED.get(name)
    if action is not None:
        _ACTIONS[action]()
