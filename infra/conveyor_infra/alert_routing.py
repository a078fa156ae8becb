"""How alerts travel once they fire: the Alertmanager routing the stack deploys (AMP) and the
drill loads into a real Alertmanager, with only the receivers swapped. One definition for both.

Pages and tickets route apart (a page wakes someone; a ticket and a warning wait for working
hours), and a burn-rate page inhibits its own ticket (same `sloth_id`): one SLO burning fast is
one notification, not two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

PAGE_RECEIVER = "page"
TICKET_RECEIVER = "ticket"
RECEIVERS = (PAGE_RECEIVER, TICKET_RECEIVER)


def alertmanager_config(receivers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The config with `receivers[name]` (e.g. {"sns_configs": [...]}) as each receiver."""
    missing = set(RECEIVERS) - receivers.keys()
    if missing:
        raise ValueError(f"no receiver given for {sorted(missing)}")
    return {
        "route": {
            "receiver": TICKET_RECEIVER,
            "group_by": ["alertname", "severity"],
            "routes": [{"receiver": PAGE_RECEIVER, "matchers": ['severity="page"']}],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['severity="page"', 'sloth_id=~".+"'],
                "target_matchers": ['severity="ticket"', 'sloth_id=~".+"'],
                "equal": ["sloth_id"],
            }
        ],
        "receivers": [{"name": name, **receivers[name]} for name in RECEIVERS],
    }


def sns_receivers(topic_arn: str, region: str) -> dict[str, dict[str, Any]]:
    """Both receivers publish to the alarm topic; severity travels as a message attribute."""
    return {
        name: {
            "sns_configs": [
                {
                    "topic_arn": topic_arn,
                    "sigv4": {"region": region},
                    "attributes": {"severity": "{{ .CommonLabels.severity }}"},
                }
            ]
        }
        for name in RECEIVERS
    }


def amp_definition(topic_arn: str, region: str) -> str:
    """AMP's AlertManagerDefinition: the config as a string under `alertmanager_config`."""
    config = yaml.safe_dump(alertmanager_config(sns_receivers(topic_arn, region)), sort_keys=False)
    return yaml.safe_dump({"alertmanager_config": config}, sort_keys=False)
