"""The task table: DynamoDB single table built from `conveyor.schema`, the store's own layout."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from conveyor import schema


@dataclass(frozen=True)
class TaskTableArgs:
    name_prefix: str
    pitr_recovery_days: int
    # Also sets Pulumi's `protect`, so neither the console nor `pulumi destroy` drops the table.
    deletion_protection: bool


def global_secondary_indexes() -> list[aws.dynamodb.TableGlobalSecondaryIndexArgs]:
    """The GSIs of `conveyor.schema`, each projecting only the attributes the store reads."""
    return [
        aws.dynamodb.TableGlobalSecondaryIndexArgs(
            name=index_name,
            key_schemas=[
                aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                    attribute_name=hash_key, key_type="HASH"
                ),
                aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                    attribute_name=range_key, key_type="RANGE"
                ),
            ],
            projection_type="INCLUDE",
            non_key_attributes=list(projected),
        )
        for index_name, hash_key, range_key, projected in schema.GLOBAL_SECONDARY_INDEXES
    ]


class TaskTable(pulumi.ComponentResource):
    """On-demand table with PITR, TTL on idempotency records and KMS encryption at rest."""

    table: aws.dynamodb.Table

    def __init__(
        self, name: str, args: TaskTableArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:storage:TaskTable", name, None, opts)
        self.table = aws.dynamodb.Table(
            f"{name}-table",
            name=f"{args.name_prefix}-tasks",
            billing_mode="PAY_PER_REQUEST",
            hash_key=schema.PK,
            range_key=schema.SK,
            attributes=[
                aws.dynamodb.TableAttributeArgs(name=attribute, type=kind)
                for attribute, kind in schema.KEY_ATTRIBUTES.items()
            ],
            global_secondary_indexes=global_secondary_indexes(),
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=schema.TTL_ATTRIBUTE, enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(
                enabled=True, recovery_period_in_days=args.pitr_recovery_days
            ),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            deletion_protection_enabled=args.deletion_protection,
            opts=pulumi.ResourceOptions(parent=self, protect=args.deletion_protection),
        )
        self.register_outputs({"table_name": self.table.name, "table_arn": self.table.arn})

    def index_arn(self, index_name: str) -> pulumi.Output[str]:
        """The exact ARN of one GSI, for IAM statements that must not use `index/*`."""
        return self.table.arn.apply(lambda arn: f"{arn}/index/{index_name}")
