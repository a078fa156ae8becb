"""Failpoints: named places where a test can make a process die, to prove crash safety.

`CONVEYOR_FAILPOINTS=api.after_commit=kill` makes the API SIGKILL itself right after a submit
commits and before its message is sent: the window the outbox relay exists for. Unset (the
default, and always in deployed stacks) a failpoint costs one dict lookup. The same technique
as TiKV's fail-rs or FreeBSD's fail(9), kept to what the crash tests need.
"""

from __future__ import annotations

import os
import signal

_ACTIONS = {"kill": lambda: os.kill(os.getpid(), signal.SIGKILL)}


def _parse(spec: str) -> dict[str, str]:
    points = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = part.partition("=")
        if action not in _ACTIONS:
            raise ValueError(f"failpoint {name!r}: unknown action {action!r} (known: kill)")
        points[name] = action
    return points


_ARMED = _parse(os.environ.get("CONVEYOR_FAILPOINTS", ""))


def hit(name: str) -> None:
    action = _ARMED.get(name)
    if action is not None:
        _ACTIONS[action]()
