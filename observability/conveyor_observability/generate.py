"""Write every generated observability artefact, or check that the committed ones are current.

python -m conveyor_observability.generate            # rewrite rules, tests, dashboards
python -m conveyor_observability.generate --check    # exit 1 naming each stale file
python -m conveyor_observability.generate --time-scale 60 --out DIR   # rules 60x faster (drill)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conveyor_observability.artefacts import generated_files, stale_files
from conveyor_observability.paths import REPO_ROOT
from conveyor_observability.slo_tests import ScenarioError
from conveyor_observability.spec import SpecError, load_spec
from conveyor_observability.time_scale import scaled_rule_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conveyor_observability.generate")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if any file is stale"
    )
    parser.add_argument(
        "--time-scale",
        type=int,
        metavar="N",
        help="write only the rules, every duration divided by N, to --out (time_scale.py)",
    )
    parser.add_argument("--out", type=Path, help="directory for --time-scale's rules")
    args = parser.parse_args(argv)
    if args.time_scale:
        if args.out is None:
            parser.error("--time-scale needs --out")
        args.out.mkdir(parents=True, exist_ok=True)
        for path, text in scaled_rule_files(load_spec(), args.time_scale, args.out).items():
            path.write_text(text)
            print(f"wrote {path}")
        return 0
    try:
        expected = generated_files(load_spec())
    except (SpecError, ScenarioError) as exc:
        print(exc, file=sys.stderr)
        return 2
    stale = stale_files(expected)
    if args.check:
        for path, why in sorted(stale.items()):
            print(f"stale: {path.relative_to(REPO_ROOT)} ({why})", file=sys.stderr)
        if stale:
            print("run: python -m conveyor_observability.generate", file=sys.stderr)
            return 1
        print(f"{len(expected)} generated files are up to date")
        return 0
    for path, why in sorted(stale.items()):
        if why == "no longer generated":
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[path])
        print(
            f"{'removed' if why == 'no longer generated' else 'wrote'} "
            f"{path.relative_to(REPO_ROOT)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
