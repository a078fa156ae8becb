"""Conveyor's development harness: the embedded AWS backends, the local system (`make local`),
the soak, the metering proxy, the outside oracle, fault injection and the demo handlers.

Nothing here ships: the service image installs only the `conveyor` package, which never
imports this one. The harness attaches to a product process through the product's two seams,
`conveyor.failpoints.install` and `conveyor.aws.add_client_hook` (see conveyor_dev.inject).
"""
