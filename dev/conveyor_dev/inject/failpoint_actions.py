"""Failpoint actions for the crash tests: `CONVEYOR_FAILPOINTS=api.after_commit=kill` arms the
product's failpoint `api.after_commit` (conveyor.failpoints, where the table of places is) to
SIGKILL the process. An unknown name or action fails start-up: a misspelt failpoint would
otherwise test nothing, silently.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from conveyor.failpoints import POINTS

ENV_VAR = "CONVEYOR_FAILPOINTS"
_ACTIONS: dict[str, Callable[[], None]] = {"kill": lambda: os.kill(os.getpid(), signal.SIGKILL)}


def parse(spec: str) -> dict[str, str]:
    """failpoint name -> action name, from a CONVEYOR_FAILPOINTS value."""
    points = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = part.partition("=")
        if name not in POINTS:
            raise ValueError(f"failpoint {name!r}: unknown (known: {', '.join(sorted(POINTS))})")
        if action not in _ACTIONS:
            raise ValueError(f"failpoint {name!r}: unknown action {action!r} (known: kill)")
        points[name] = action
    return points


def actions(spec: str) -> dict[str, Callable[[], None]]:
    """What conveyor.failpoints.install takes, from a CONVEYOR_FAILPOINTS value."""
    return {name: _ACTIONS[action] for name, action in parse(spec).items()}
