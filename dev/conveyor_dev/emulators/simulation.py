"""Run the Pulumi program in-process under Pulumi's mocks and record what it declares.

Usage: python -m conveyor_dev.emulators.simulation STACK [--set KEY=VALUE ...]   (JSON on stdout)

The mock cloud answers like AWS would: ids, ARNs, URLs and DNS names follow the real formats
for the stack's account and region, so IAM documents and `valueFrom`s built from them can be
checked as if deployed. Pulumi's runtime state is global, so one process runs one stack; callers
use `conveyor_dev.emulators.declared.declare()`, which starts that process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import yaml
from conveyor_infra.paths import REPO_ROOT
from pulumi.runtime import mocks, rpc

DEFAULT_ACCOUNT = "123456789012"
_used = False


def stack_config(stack: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stack file's config as the Pulumi CLI hands it to a program: strings, JSON for
    structured values."""
    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name} in {REPO_ROOT}")
    document = yaml.safe_load(path.read_text()) or {}
    config: dict[str, str] = {}
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            raise ValueError(
                f"{key} in {path.name} is encrypted; mocks cannot decrypt it: pass a test "
                "value as an override instead"
            )
        if isinstance(value, str):
            config[key] = value
        elif isinstance(value, bool):
            config[key] = "true" if value else "false"
        else:
            config[key] = json.dumps(value)
    config.update(overrides or {})
    return config


def _short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def _unwrap_secrets(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return _unwrap_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v) for v in value]
    return value


Computed = Callable[[str, dict[str, Any], str, str], dict[str, Any]]


def _arn(service: str, region: str, account: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def _queue(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
    return {"id": url, "url": url, "arn": _arn("sqs", region, account, name)}


def _table(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    return {"id": name, "arn": _arn("dynamodb", region, account, f"table/{name}")}


def _secret(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    arn = _arn("secretsmanager", region, account, f"secret:{name}-{_short_hash(name, length=6)}")
    return {"id": arn, "arn": arn}


def _secret_version(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
    version = _short_hash(name, str(inputs.get("secretString")), length=32)
    return {"id": f"{inputs['secretId']}|{version}", "versionId": version}


def _kms_key(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    key_id = f"{_short_hash(name)}-0000-4000-8000-{_short_hash(name, 'k', length=12)}"
    return {"id": key_id, "keyId": key_id, "arn": _arn("kms", region, account, f"key/{key_id}")}


def _log_group(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    return {"id": name, "arn": _arn("logs", region, account, f"log-group:{name}")}


def _role(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    return {"id": name, "arn": f"arn:aws:iam::{account}:role/{name}", "uniqueId": "AROA" + name}


def _topic(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    arn = _arn("sns", region, account, name)
    return {"id": arn, "arn": arn}


def _cluster(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    arn = _arn("ecs", region, account, f"cluster/{name}")
    return {"id": arn, "arn": arn}


def _task_definition(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
    family = inputs["family"]
    return {
        "id": family,
        "arn": _arn("ecs", region, account, f"task-definition/{family}:1"),
        "arnWithoutRevision": _arn("ecs", region, account, f"task-definition/{family}"),
        "revision": 1,
    }


def _service(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    cluster = str(inputs.get("cluster", "")).rsplit("/", 1)[-1]
    return {"id": _arn("ecs", region, account, f"service/{cluster}/{name}")}


def _load_balancer(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
    suffix = f"net/{name}/{_short_hash(name, length=16)}"
    return {
        "id": _arn("elasticloadbalancing", region, account, f"loadbalancer/{suffix}"),
        "arn": _arn("elasticloadbalancing", region, account, f"loadbalancer/{suffix}"),
        "arnSuffix": suffix,
        "dnsName": f"{name}-{_short_hash(name, length=10)}.elb.{region}.amazonaws.com",
        "zoneId": "Z2IFOLAFXWLO4F",
    }


def _target_group(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
    suffix = f"targetgroup/{name}/{_short_hash(name, length=16)}"
    arn = _arn("elasticloadbalancing", region, account, suffix)
    return {"id": arn, "arn": arn, "arnSuffix": suffix}


def _workspace(name: str, inputs: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    workspace_id = f"ws-{_short_hash(name)}-0000-4000-8000-{_short_hash(name, 'w', length=12)}"
    return {
        "id": workspace_id,
        "arn": _arn("aps", region, account, f"workspace/{workspace_id}"),
        "prometheusEndpoint": f"https://aps-workspaces.{region}.amazonaws.com/workspaces/{workspace_id}/",
    }


def _discovery_service(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
    service_id = f"srv-{_short_hash(name, length=16)}"
    return {
        "id": service_id,
        "arn": _arn("servicediscovery", region, account, f"service/{service_id}"),
    }


def _discovery_namespace(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
    namespace_id = f"ns-{_short_hash(name, length=16)}"
    arn = _arn("servicediscovery", region, account, f"namespace/{namespace_id}")
    return {"id": namespace_id, "arn": arn, "hostedZone": f"Z{_short_hash(name, length=12)}"}


def _ec2_id(prefix: str) -> Computed:
    def computed(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
        return {"id": f"{prefix}-{_short_hash(name, length=17)}"}

    return computed


def _pem(kind: str) -> Computed:
    # Recognisable placeholders, never key material: the tests must not need real keys.
    def computed(name: str, inputs: dict[str, Any], region: str, account: str) -> dict:
        return {f"{kind}Pem": f"mock {kind} pem of {name}"}

    return computed


COMPUTED: dict[str, Computed] = {
    "aws:sqs/queue:Queue": _queue,
    "aws:dynamodb/table:Table": _table,
    "aws:secretsmanager/secret:Secret": _secret,
    "aws:secretsmanager/secretVersion:SecretVersion": _secret_version,
    "aws:kms/key:Key": _kms_key,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:iam/role:Role": _role,
    "aws:sns/topic:Topic": _topic,
    "aws:ecs/cluster:Cluster": _cluster,
    "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
    "aws:ecs/service:Service": _service,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:amp/workspace:Workspace": _workspace,
    "aws:servicediscovery/service:Service": _discovery_service,
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": _discovery_namespace,
    "aws:ec2/vpc:Vpc": _ec2_id("vpc"),
    "aws:ec2/subnet:Subnet": _ec2_id("subnet"),
    "aws:ec2/securityGroup:SecurityGroup": _ec2_id("sg"),
    "aws:ec2/internetGateway:InternetGateway": _ec2_id("igw"),
    "aws:ec2/natGateway:NatGateway": _ec2_id("nat"),
    "aws:ec2/eip:Eip": _ec2_id("eipalloc"),
    "aws:ec2/routeTable:RouteTable": _ec2_id("rtb"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": _ec2_id("vpce"),
    "tls:index/privateKey:PrivateKey": _pem("privateKey"),
    "tls:index/selfSignedCert:SelfSignedCert": _pem("cert"),
    "tls:index/certRequest:CertRequest": _pem("certRequest"),
    "tls:index/locallySignedCert:LocallySignedCert": _pem("cert"),
}


class MockCloud(pulumi.runtime.Mocks):
    def __init__(self, region: str, account: str) -> None:
        self.region = region
        self.account = account

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = _unwrap_secrets(args.inputs)
        physical_name = str(inputs.get("name") or args.name)
        computed = COMPUTED.get(args.typ)
        extra = computed(physical_name, inputs, self.region, self.account) if computed else {}
        outputs = {"name": physical_name, **inputs, **extra} if args.custom else dict(inputs)
        resource_id = extra.get("id", f"{args.name}-id") if args.custom else None
        return resource_id, outputs

    def call(self, args: mocks.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account,
                "arn": f"arn:aws:iam::{self.account}:user/mock",
                "userId": "MOCKUSER",
            }
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{self.region}{letter}" for letter in "abc"]
            return {"names": names, "zoneIds": [f"mock-az{i}" for i in range(1, 4)]}
        raise NotImplementedError(f"the mock cloud does not answer {args.token}")


class RecordingMonitor(mocks.MockMonitor):
    """Keeps what MockMonitor drops: each resource's inputs, parent and dependencies."""

    def __init__(self, cloud: MockCloud) -> None:
        super().__init__(cloud)
        self.records: list[dict[str, Any]] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        registration = self.resources[response.urn]
        inputs = _unwrap_secrets(rpc.deserialize_properties(request.object))
        self.records.append(
            {
                "type": request.type,
                "name": request.name,
                "urn": response.urn,
                "parent": request.parent,
                "custom": bool(request.custom),
                "inputs": inputs,
                "outputs": _unwrap_secrets(registration.state),
                "dependencies": list(request.dependencies),
                "property_dependencies": {
                    key: list(deps.urns) for key, deps in request.propertyDependencies.items()
                },
            }
        )
        return response


def _account(config: Mapping[str, str]) -> str:
    allowed = json.loads(config.get("aws:allowedAccountIds", "[]"))
    return str(allowed[0]) if allowed else DEFAULT_ACCOUNT


def simulate(stack: str, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run the program for `stack` once in this process; returns resources and outputs."""
    global _used
    if _used:
        raise RuntimeError("Pulumi's mock runtime is process-global: run one stack per process")
    _used = True

    from conveyor_infra import config as stack_settings
    from conveyor_infra import program

    config = stack_config(stack, overrides)
    pulumi.runtime.set_all_config(config)
    monitor = RecordingMonitor(MockCloud(config.get("aws:region", "us-east-1"), _account(config)))
    pulumi.runtime.set_mocks(
        monitor.mocks, project="conveyor", stack=stack, preview=False, monitor=monitor
    )
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output[None]:
        exported = program.build(stack_settings.load())
        return pulumi.Output.from_input(exported).apply(outputs.update)

    run()
    return {"resources": monitor.records, "outputs": _unwrap_secrets(outputs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    # Keep stdout for the JSON document, whatever the program prints.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            document = simulate(args.stack, overrides)
        except pulumi.RunError as error:
            # What `pulumi up` would show: the message, no traceback.
            print(f"error: {error}", file=sys.stderr)
            return 1
    json.dump(document, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
