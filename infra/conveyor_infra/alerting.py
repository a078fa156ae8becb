"""Paging path: an SNS topic with the stack's alarm targets, and the CloudWatch alarm per lane
that fires when anything lands in its DLQ (a task the system gave up on needs a human)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from conveyor.domain import lane_suffix

# Services that publish to the topic: CloudWatch alarms and AMP's Alertmanager.
PUBLISHERS = ("cloudwatch.amazonaws.com", "aps.amazonaws.com")


@dataclass(frozen=True)
class AlertingArgs:
    name_prefix: str
    account_id: pulumi.Input[str]
    dlq_names: Mapping[str, pulumi.Input[str]]  # per lane
    alarm_emails: Sequence[str]


class Alerting(pulumi.ComponentResource):
    """The topic is not KMS-encrypted: CloudWatch cannot publish to a topic under an AWS-managed
    key, and alarm payloads carry no task data."""

    topic: aws.sns.Topic
    dlq_alarms: dict[str, aws.cloudwatch.MetricAlarm]  # per lane

    def __init__(
        self, name: str, args: AlertingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:observability:Alerting", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(f"{name}-topic", name=f"{args.name_prefix}-alarms", opts=child)
        aws.sns.TopicPolicy(
            f"{name}-topic-policy",
            arn=self.topic.arn,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AlarmPublishers",
                            "Effect": "Allow",
                            "Principal": {"Service": list(PUBLISHERS)},
                            "Action": ["sns:Publish", "sns:GetTopicAttributes"],
                            "Resource": self.topic.arn,
                            "Condition": {"StringEquals": {"aws:SourceAccount": args.account_id}},
                        }
                    ],
                }
            ),
            opts=child,
        )
        for index, email in enumerate(args.alarm_emails):
            aws.sns.TopicSubscription(
                f"{name}-email-{index}",
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                opts=child,
            )
        # One per lane's DLQ; the default lane's keeps its name from before lanes.
        self.dlq_alarms = {
            lane: self._dlq_alarm(name, args, lane, dlq_name, child)
            for lane, dlq_name in args.dlq_names.items()
        }
        self.register_outputs({"topic_arn": self.topic.arn})

    def _dlq_alarm(
        self,
        name: str,
        args: AlertingArgs,
        lane: str,
        dlq_name: pulumi.Input[str],
        child: pulumi.ResourceOptions,
    ) -> aws.cloudwatch.MetricAlarm:
        suffix = lane_suffix(lane, "-")
        return aws.cloudwatch.MetricAlarm(
            f"{name}-dlq-not-empty{suffix}",
            name=f"{args.name_prefix}-dlq-not-empty{suffix}",
            alarm_description=(
                f"Tasks reached the {lane} lane's dead-letter queue. "
                "Runbook: runbooks/ConveyorDlqNotEmpty.md"
            ),
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": dlq_name},
            statistic="Maximum",
            period=60,
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            opts=child,
        )
