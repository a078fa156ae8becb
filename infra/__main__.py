"""Pulumi entry point: `pulumi up -s <stack>` from the repository root (see infra/README.md)."""

import pulumi
from conveyor_infra import config, program

for name, value in program.build(config.load()).items():
    pulumi.export(name, value)
