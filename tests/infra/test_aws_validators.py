"""AWS's own rules, offline, on what every stack declares (captured under Pulumi's mocks):

- botocore's service models: the API call that creates each resource, with the declared values;
- cfn-lint: the resources rendered as CloudFormation, against AWS's resource provider schemas;
- parliament over every IAM document (role, trust, topic and VPC endpoint policies);
- amtool on the Alertmanager definition and promtool on every AMP rule namespace.

Each validator is also shown failing on a deliberately broken copy of a declared input.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_calls import ApiCall, api_calls, problems, unmapped_types
from cfnlint.api import ManualArgs, lint
from cloudformation import NOT_RENDERED, template, unrendered_types
from conveyor_dev.emulators.declared import Declaration
from conveyor_infra.config import FARGATE_MEMORY
from parliament import analyze_policy_string
from stack_support import COMPUTE_STACKS, STACKS

# cfn-lint findings that do not apply to a rendered Pulumi program, each with its reason.
CFN_LINT_IGNORED = {
    # The program takes zone names from aws.get_availability_zones at deploy time; under mocks
    # they are literal, and a template would use Fn::GetAZs instead.
    "W3010": "availability zones come from the provider at deploy time",
}
# The one finding parliament reports for any role trust policy: AWS forbids a Resource there.
TRUST_POLICY_FINDING = "MALFORMED: Statement contains neither Resource nor NotResource"


@cache
def _lint(template_json: str, region: str) -> list[tuple[str, str, str]]:
    matches = lint(
        template_json,
        config=ManualArgs(regions=[region], ignore_checks=sorted(CFN_LINT_IGNORED)),
    )
    return [(m.rule.id, m.message, "/".join(map(str, m.path))) for m in matches]


def cfn_lint(cfn_template: dict[str, Any], region: str = "eu-west-1") -> list[tuple[str, str, str]]:
    return _lint(json.dumps(cfn_template, sort_keys=True), region)


def _region(declaration: Declaration) -> str:
    return str(declaration.outputs["region"])


# ---- botocore ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_api_call_fits_botocores_input_shapes(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    assert unmapped_types(declaration) == set()
    reports = {(c.resource, c.operation): problems(c) for c in api_calls(declaration)}
    assert len(reports) > 10
    assert {call: report for call, report in reports.items() if report} == {}


def test_botocore_rejects_a_misspelt_container_setting(
    declarations: dict[str, Declaration],
) -> None:
    (register,) = [
        c
        for c in api_calls(declarations["prod"])
        if c.resource == "ecs-worker-task" and c.operation == "RegisterTaskDefinition"
    ]
    broken = copy.deepcopy(dict(register.params))
    broken["containerDefinitions"][1]["memoryReservaton"] = 64
    found = problems(ApiCall(register.resource, register.service, register.operation, broken))
    assert 'Unknown parameter in containerDefinitions[1]: "memoryReservaton"' in found


def test_botocore_rejects_a_value_outside_the_models_pattern_or_length(
    declarations: dict[str, Declaration],
) -> None:
    calls = {(c.resource, c.operation): c for c in api_calls(declarations["prod"])}
    logs = calls[("monitoring-api-logs", "CreateLogGroup")]
    bad_name = ApiCall(logs.resource, "logs", "CreateLogGroup", {"logGroupName": "/ecs/api's"})
    assert "/ecs/api's" in problems(bad_name) and "valid types: /" in problems(bad_name)
    role = calls[("api-iam-task", "CreateRole")]
    long_name = ApiCall(role.resource, "iam", "CreateRole", {**role.params, "RoleName": "r" * 65})
    assert "<= 64 chars" in problems(long_name)


# ---- cfn-lint ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_cloudformation_rendering_passes_cfn_lint(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    assert unrendered_types(declaration) == set()
    rendered = template(declaration)
    assert len(rendered["Resources"]) > 5
    assert cfn_lint(rendered, _region(declaration)) == []


def _broken_copy(declaration: Declaration, logical_id: str, **props: Any) -> dict[str, Any]:
    rendered = template(declaration)
    resource = rendered["Resources"][logical_id]
    resource["Properties"] = {**resource["Properties"], **props}
    return {**rendered, "Resources": {logical_id: resource}}


def test_cfn_lint_rejects_an_apostrophe_in_a_security_group_description(
    declarations: dict[str, Declaration],
) -> None:
    """Issue 10, problem 1: EC2 refuses the description, and every dependant with it."""
    broken = _broken_copy(
        declarations["dev"],
        "NetworkOtelGateway",
        GroupDescription="Trace gateway: OTLP from the service tasks' sidecars",
    )
    assert [rule for rule, _, _ in cfn_lint(broken)] == ["E3031"]


def test_cfn_lint_rejects_a_task_size_fargate_does_not_offer(
    declarations: dict[str, Declaration],
) -> None:
    broken = _broken_copy(declarations["dev"], "EcsApiTask", Cpu="256", Memory="1536")
    assert [rule for rule, _, _ in cfn_lint(broken)] == ["E3047"]


def test_the_config_accepts_only_task_sizes_fargate_offers(
    declarations: dict[str, Declaration],
) -> None:
    """Every (cpu, memory) StackConfig accepts, as a task definition, passes cfn-lint's E3047."""
    task = template(declarations["dev"])["Resources"]["EcsApiTask"]
    sizes = [(cpu, memory) for cpu, memories in FARGATE_MEMORY.items() for memory in memories]
    resources = {
        f"Task{cpu}x{memory}": {
            **task,
            "Properties": {**task["Properties"], "Cpu": str(cpu), "Memory": str(memory)},
        }
        for cpu, memory in sizes
    }
    found = cfn_lint({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources})
    assert [(rule, path) for rule, _, path in found] == []


def test_every_unrendered_type_says_why() -> None:
    assert all(len(reason) > 20 for reason in NOT_RENDERED.values())


# ---- parliament -------------------------------------------------------------------------------


def iam_documents(declaration: Declaration) -> dict[str, tuple[str, str]]:
    """Every IAM document the stack declares: name -> (kind, JSON)."""
    documents: dict[str, tuple[str, str]] = {}
    for resource in declaration:
        inputs = resource.inputs
        if resource.type == "aws:iam/role:Role":
            documents[f"{resource.name} trust"] = ("trust", inputs["assumeRolePolicy"])
        elif resource.type in ("aws:iam/rolePolicy:RolePolicy", "aws:sns/topicPolicy:TopicPolicy"):
            documents[resource.name] = ("identity", inputs["policy"])
        elif resource.type == "aws:ec2/vpcEndpoint:VpcEndpoint":
            documents[resource.name] = ("endpoint", inputs["policy"])
    return documents


def parliament_findings(kind: str, document: str) -> list[str]:
    policy = analyze_policy_string(document)
    findings = [f"{f.issue}: {f.detail}" for f in policy.findings]
    if kind == "trust":
        findings = [f for f in findings if f != TRUST_POLICY_FINDING]
    return findings


@pytest.mark.parametrize("stack", STACKS)
def test_parliament_finds_nothing_in_any_iam_document(
    declarations: dict[str, Declaration], stack: str
) -> None:
    documents = iam_documents(declarations[stack])
    expected = 1 if stack == "localstack" else 1 + 8 + 8 + 7  # topic, roles, policies, endpoints
    assert len(documents) == expected
    found = {name: parliament_findings(*doc) for name, doc in documents.items()}
    assert {name: f for name, f in found.items() if f} == {}


@pytest.mark.parametrize(
    ("statement", "issue"),
    [
        (
            {
                "Action": ["sqs:RecieveMessage"],
                "Resource": ["arn:aws:sqs:eu-west-1:333333333333:q.fifo"],
            },
            "UNKNOWN_ACTION",
        ),
        (
            {
                "Action": ["sqs:SendMessage"],
                "Resource": ["arn:aws:dynamodb:eu-west-1:333333333333:table/t"],
            },
            "RESOURCE_MISMATCH",
        ),
    ],
    ids=["misspelt-action", "action-on-the-wrong-resource-type"],
)
def test_parliament_rejects_a_broken_role_policy(
    declarations: dict[str, Declaration], statement: dict[str, Any], issue: str
) -> None:
    document = json.loads(declarations["prod"].named("relay-iam-task-policy").inputs["policy"])
    document["Statement"].append({"Sid": "Broken", "Effect": "Allow", **statement})
    assert [f.split(":")[0] for f in parliament_findings("identity", json.dumps(document))] == [
        issue
    ]


# ---- amtool and promtool ----------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed (Debian: prometheus-alertmanager for amtool, prometheus "
            "for promtool; .ci/run installs both)"
        )
    return path


def _check(
    tool: str, subcommand: list[str], content: str, tmp_path: Path
) -> subprocess.CompletedProcess:
    path = tmp_path / "input.yaml"
    path.write_text(content)
    return subprocess.run(
        [_tool(tool), *subcommand, str(path)], capture_output=True, text=True, check=False
    )


def alertmanager_config(definition: str) -> str:
    """AMP's definition wraps the Alertmanager config (and templates) in one YAML document."""
    document = yaml.safe_load(definition)
    assert set(document) <= {"alertmanager_config", "template_files"}
    return str(document["alertmanager_config"])


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_amtool_accepts_the_alertmanager_definition(
    declarations: dict[str, Declaration], stack: str, tmp_path: Path
) -> None:
    (definition,) = declarations[stack].of_type(
        "aws:amp/alertManagerDefinition:AlertManagerDefinition"
    )
    config = alertmanager_config(definition.inputs["definition"])
    done = _check("amtool", ["check-config"], config, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_rejects_a_route_to_an_undefined_receiver(
    declarations: dict[str, Declaration], tmp_path: Path
) -> None:
    (definition,) = declarations["prod"].of_type(
        "aws:amp/alertManagerDefinition:AlertManagerDefinition"
    )
    config = yaml.safe_load(alertmanager_config(definition.inputs["definition"]))
    config["route"]["receiver"] = "pager"
    done = _check("amtool", ["check-config"], yaml.safe_dump(config), tmp_path)
    assert done.returncode != 0
    assert 'undefined receiver "pager"' in done.stdout + done.stderr


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_promtool_accepts_every_rule_namespace(
    declarations: dict[str, Declaration], stack: str, tmp_path: Path
) -> None:
    namespaces = declarations[stack].of_type("aws:amp/ruleGroupNamespace:RuleGroupNamespace")
    assert namespaces
    for namespace in namespaces:
        done = _check("promtool", ["check", "rules"], namespace.inputs["data"], tmp_path)
        assert done.returncode == 0, f"{namespace.name}: {done.stdout}{done.stderr}"


def test_promtool_rejects_a_rule_with_a_broken_expression(
    declarations: dict[str, Declaration], tmp_path: Path
) -> None:
    namespace = declarations["prod"].of_type("aws:amp/ruleGroupNamespace:RuleGroupNamespace")[0]
    rules = yaml.safe_load(namespace.inputs["data"])
    rules["groups"][0]["rules"][0]["expr"] = "sum(rate(conveyor_tasks_total[5m]) by (state)"
    done = _check("promtool", ["check", "rules"], yaml.safe_dump(rules), tmp_path)
    assert done.returncode != 0
    assert "parse error" in done.stdout + done.stderr
