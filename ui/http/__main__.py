"""``python -m heidi_engine.ui.http``: the HTTP status server."""

from __future__ import annotations

import sys

from heidi_engine.ui.http.server import main

sys.exit(main())
