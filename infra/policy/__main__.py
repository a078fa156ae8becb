"""CrossGuard pack: `pulumi preview --policy-pack infra/policy` (see infra/README.md).

The validators live in conveyor_infra.policies, where the tests call them directly.
"""

from conveyor_infra.policies import policies
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="conveyor",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
