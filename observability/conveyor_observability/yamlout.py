"""YAML output that stays readable in review: multi-line strings (PromQL) as literal blocks,
keys in the order they were built, and a comment header."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(document: Any, header: str) -> str:
    """`document` as YAML, preceded by `header` as '#' comment lines."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100_000, allow_unicode=True)
    return comment + body
