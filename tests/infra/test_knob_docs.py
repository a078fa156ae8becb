"""What the READMEs say about the task runtime knobs is what `conveyor.runtime` enforces."""

from __future__ import annotations

from pathlib import Path

import knob_docs
import pytest


@pytest.mark.parametrize("readme", list(knob_docs.VOCABULARIES), ids=lambda p: p.parent.name)
def test_the_readme_knob_table_is_rendered_from_the_model(readme: Path) -> None:
    text = readme.read_text()
    assert knob_docs.BEGIN in text, f"{readme} has no runtime knob table"
    assert knob_docs.block(text) == knob_docs.render(readme), (
        f"{readme}'s runtime knob table is stale: run .venv/bin/python tests/infra/knob_docs.py"
    )


@pytest.mark.parametrize("readme", list(knob_docs.PROSE), ids=lambda p: p.parent.name)
def test_the_readme_prose_states_the_models_values(readme: Path) -> None:
    text = knob_docs.flat(readme.read_text())
    for sentence in knob_docs.PROSE[readme]:
        assert sentence in text, f"{readme} no longer says: {sentence}"


def test_the_table_states_each_rule_as_the_services_and_the_stack_say_it() -> None:
    """The rendered rules are the validators' own words (a third, not half)."""
    table = knob_docs.render(knob_docs.INFRA_README)
    assert "`heartbeatIntervalSeconds` must be at most a third of `leaseSeconds`" in table
    assert "`heartbeatIntervalSeconds` must be at most a third of `visibilityTimeoutSeconds`" in (
        table
    )
    assert "at 25 receives" in table
