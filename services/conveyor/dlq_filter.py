"""Which dead letters an operator command looks at: `conveyor dlq inspect|redrive --type
--error`."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters an inspect or redrive considers: of `task_type`, and with a last
    error that `error` finds (re.search, so a plain substring works). None matches any."""

    task_type: str | None = None
    error: re.Pattern[str] | None = None

    @property
    def narrows(self) -> bool:
        return self.task_type is not None or self.error is not None

    def matches(self, task_type: str, last_error: str) -> bool:
        if self.task_type is not None and task_type != self.task_type:
            return False
        return self.error is None or self.error.search(last_error) is not None


ANY = DlqFilter()
