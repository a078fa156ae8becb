"""Paging path: an SNS topic with the stack's alarm targets, and the CloudWatch alarm that
fires when anything lands in the DLQ (a task the system gave up on needs a human)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# Services that publish to the topic: CloudWatch alarms and AMP's Alertmanager.
PUBLISHERS = ("cloudwatch.amazonaws.com", "aps.amazonaws.com")


@dataclass(frozen=True)
class AlertingArgs:
    name_prefix: str
    account_id: pulumi.Input[str]
    dlq_name: pulumi.Input[str]
    alarm_emails: Sequence[str]


class Alerting(pulumi.ComponentResource):
    """The topic is not KMS-encrypted: CloudWatch cannot publish to a topic under an AWS-managed
    key, and alarm payloads carry no task data."""

    topic: aws.sns.Topic
    dlq_alarm: aws.cloudwatch.MetricAlarm

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
        self.dlq_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-dlq-not-empty",
            name=f"{args.name_prefix}-dlq-not-empty",
            alarm_description=(
                "Tasks reached the dead-letter queue. Runbook: runbooks/ConveyorDlqNotEmpty.md"
            ),
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": args.dlq_name},
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
        self.register_outputs({"topic_arn": self.topic.arn})
