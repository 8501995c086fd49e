"""What keeps the supervisor from doing its job right now, by where it happened (a full disk, mostly).

Every write site reports its outcome here: a failure sets a problem for that site, the next success
clears it. The joined text is what viewers show as the reason for "degraded" health. Changes are logged
once each, not at every retry.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Problems:
    """Current problems by site; :attr:`text` is their one-line summary (``None`` when all is well)."""

    def __init__(self) -> None:
        self._by_site: dict[str, str] = {}

    def report(self, site: str, problem: str | None) -> bool:
        """Set (or with ``None`` clear) the problem of ``site``; True when the summary changed."""
        before = self._by_site.get(site)
        if problem == before:
            return False
        if problem is None:
            del self._by_site[site]
            log.warning("%s: recovered (%s)", site, before)
        else:
            self._by_site[site] = problem
            log.error("%s: %s", site, problem)
        return True

    @property
    def sites(self) -> frozenset[str]:
        """The sites that have a problem now."""
        return frozenset(self._by_site)

    @property
    def text(self) -> str | None:
        """Every current problem, in one line."""
        if not self._by_site:
            return None
        return "; ".join(self._by_site[site] for site in sorted(self._by_site))
