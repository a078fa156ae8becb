"""README's emulator-gap table is the one gaps.py renders (the drift check), and every gap
names a case that exists."""

from __future__ import annotations

import gaps


def test_the_readme_gap_table_is_rendered_from_gaps_py():
    assert gaps.readme_table(gaps.README.read_text()) == gaps.render(), (
        "README.md's emulator-gap table is stale: run .venv/bin/python tests/conformance/gaps.py"
    )


def test_every_gap_names_an_existing_case_and_a_compared_backend():
    cases = {case for names in gaps.cases().values() for case in names}
    backends = {b for columns in gaps.COLUMNS.values() for b in columns}
    assert {case for case, _ in gaps.GAPS} <= cases
    assert {backend for _, backend in gaps.GAPS} <= backends
