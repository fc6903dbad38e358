"""Where the project's own executables are: the path in an environment variable (meson's
test() sets them), else the newest one in a build*/ directory of the checkout."""

import os
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent.parent


def find_tool(env_var: str, rel_path: str) -> Optional[str]:
    env = os.environ.get(env_var)
    if env:
        return env
    cands = sorted(REPO.glob(f"build*/{rel_path}"), key=lambda p: p.stat().st_mtime)
    return str(cands[-1]) if cands else None
