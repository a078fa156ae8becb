"""`python -m conveyor_dev.inject.launch MODULE [ARG ...]`: run a product entry point
(`conveyor.api`, `conveyor.relay`, `conveyor.worker`, `conveyor.cli`) as `python -m MODULE`
would, after installing the development instrumentation the environment asks for
(conveyor_dev.inject). A bad instrumentation setting stops the process before it starts.
"""

from __future__ import annotations

import runpy
import sys

from conveyor_dev.inject import install_from_env


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m conveyor_dev.inject.launch MODULE [ARG ...]")
    module, *args = argv
    try:
        install_from_env()
    except ValueError as exc:
        sys.exit(f"{module}: {exc}")
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
