"""The AWS backends the harness runs against, and their resources created as the Pulumi
program declares them."""
