"""Where the program finds the repository's other parts (stack files, observability output)."""

from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = INFRA_DIR.parent
