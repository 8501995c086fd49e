#!/usr/bin/env python3
"""``scripts/menu.py``: the spec's name for ``autotrain-menu``, the same code and the same flags
(``--start``, ``--status``, ``--stop``, ``--dashboard``, ``--http`` and every other one of ``--help``).

It only puts the repository's virtual environment first when it is run with another interpreter, so
``python scripts/menu.py --status`` works from a fresh shell as ``.venv/bin/autotrain-menu --status`` does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_VENV_PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"


def main() -> int:
    try:
        from heidi_engine.ui.menu_cli import main as menu_main
    except ImportError:
        if _VENV_PYTHON.exists() and Path(sys.prefix).resolve() != _VENV_PYTHON.parent.parent.resolve():
            os.execv(str(_VENV_PYTHON), [str(_VENV_PYTHON), __file__, *sys.argv[1:]])
        print("scripts/menu.py: heidi_engine is not installed here; run `make install` first", file=sys.stderr)
        return 1
    return menu_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
