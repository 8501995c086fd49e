"""Trusted reference solutions for the shipped task bank, keyed by task_id.

They ship with the package (``heidi_engine.agents`` data ``data/solutions.jsonl``): eval scores the
held-out bank tasks against them. The tests prove each bank task's tests pass against its reference and
fail against a trivially wrong function, so the bank's tests are neither wrong nor vacuous.
"""

from __future__ import annotations

from heidi_engine.agents.dataset.heldout import reference_solutions

SOLUTIONS: dict[str, str] = reference_solutions()
