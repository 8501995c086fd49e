"""SANDBOX resolution: auto prefers bwrap, then namespaces as root, and otherwise refuses."""

from __future__ import annotations

import pytest

from heidi_engine.bus.isolation import NONE_WARNING, SandboxUnavailable, resolve_sandbox


@pytest.mark.parametrize(
    ("mode", "bwrap", "root", "backend"),
    [
        ("auto", "/usr/bin/bwrap", False, "bwrap"),
        ("auto", "/usr/bin/bwrap", True, "bwrap"),
        ("auto", None, True, "namespaces"),
        ("bwrap", "/usr/bin/bwrap", True, "bwrap"),
        ("namespaces", "/usr/bin/bwrap", True, "namespaces"),
        ("none", None, False, "none"),
    ],
)
def test_the_backend_follows_the_mode_and_the_machine(
    mode: str, bwrap: str | None, root: bool, backend: str
) -> None:
    choice = resolve_sandbox(mode, bwrap=bwrap, root=root)
    assert choice.backend == backend
    assert (choice.warning == NONE_WARNING) is (backend == "none")


@pytest.mark.parametrize(
    ("mode", "bwrap", "root"), [("auto", None, False), ("bwrap", None, True), ("namespaces", None, False)]
)
def test_no_isolation_is_refused_with_what_to_install(mode: str, bwrap: str | None, root: bool) -> None:
    with pytest.raises(SandboxUnavailable, match="install bubblewrap") as caught:
        resolve_sandbox(mode, bwrap=bwrap, root=root)
    assert "\n" not in str(caught.value)


def test_an_unknown_mode_is_named() -> None:
    with pytest.raises(ValueError, match="'jail'"):
        resolve_sandbox("jail", bwrap=None, root=True)
