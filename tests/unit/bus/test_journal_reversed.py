"""Reading a log backwards: whole lines from the end, in blocks of any size, a torn last line left out,
lines longer than a block kept whole."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from heidi_engine.bus.journal import blocks_reversed, iter_lines_reversed


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=10),
    torn=st.sampled_from([b"", b"a", b"partial line longer than a block"]),
    block=st.integers(1, 70),
)
def test_backwards_gives_the_whole_lines_and_only_those(tmp_path_factory: object, lines: list[bytes],
                                                         torn: bytes, block: int) -> None:
    path = Path(tmp_path_factory.mktemp("log")) / "events.jsonl"  # type: ignore[attr-defined]
    body = b"".join(line + b"\n" for line in lines)
    path.write_bytes(body + torn)
    assert list(iter_lines_reversed(path, block)) == [line + b"\n" for line in reversed(lines)]
    chunks = list(blocks_reversed(path, block))
    assert b"".join(reversed(chunks)) == body
    assert all(chunk.endswith(b"\n") for chunk in chunks)


def test_a_missing_file_has_no_lines(tmp_path: Path) -> None:
    assert list(blocks_reversed(tmp_path / "gone")) == []
    assert list(iter_lines_reversed(tmp_path / "gone")) == []
