"""Development-only instrumentation of product processes: failpoints that SIGKILL the process
(CONVEYOR_FAILPOINTS), AWS fault injection (CONVEYOR_AWS_FAULTS, or `faults.armed` in-process)
and the IAM action log (CONVEYOR_AWS_ACTION_LOG).

`install_from_env()` attaches them to the product's seams. The local system starts every
service through `python -m conveyor_dev.inject.launch <module>`, which calls it before the
service's own entry point; the tests call it in their own process. A deployed image has no
conveyor_dev, so there these are absent, not merely switched off.
"""

from __future__ import annotations

import os

from conveyor import aws, failpoints

from conveyor_dev.inject import action_log, failpoint_actions, faults

_installed = False


def install_from_env() -> None:
    """Attach what the environment asks for to this process (once; later calls do nothing).
    A bad CONVEYOR_FAILPOINTS or CONVEYOR_AWS_FAULTS value raises ValueError naming it."""
    global _installed
    if _installed:
        return
    failpoints.install(failpoint_actions.actions(os.environ.get(failpoint_actions.ENV_VAR, "")))
    # Always: with no rule armed a request pays one call, and tests arm rules in-process.
    aws.add_client_hook(faults.install)
    log_hook = action_log.hook_from_env()
    if log_hook is not None:
        aws.add_client_hook(log_hook)
    _installed = True
