"""Duplicate detection for validate: an exact hash of normalised code, then MinHash near-duplicates.

Code is read with :mod:`tokenize`, so comments, blank lines, spacing and semicolons never count:

- *exact*: two solutions are equal once comments and whitespace are gone and the text is lowercased;
- *near*: the Jaccard similarity of their 5-token shingles is at least ``threshold`` (0.85 by default)
  after every identifier is renamed by order of first appearance (``v0``, ``v1``, ...). Keywords,
  builtins and attribute names (``.append``) keep their names, so renamed variables look identical
  while different algorithms that happen to share a shape do not.

The similarity is estimated with datasketch's MinHash (128 permutations, fixed seed, so verdicts are
the same on every run) and candidates are found with MinHashLSH; each candidate's estimated similarity is
checked against the threshold before it counts. Text that does not tokenize falls back to whitespace
words of the comment-stripped, lowercased text.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import keyword
import re
import token
import tokenize
from dataclasses import dataclass
from typing import Literal

from datasketch import MinHash, MinHashLSH

__all__ = ["DedupIndex", "Duplicate", "canonical_tokens", "normalise"]

_SKIP = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER})
_LAYOUT = {token.NEWLINE: "<nl>", token.INDENT: "<in>", token.DEDENT: "<de>"}
_KEEP_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
_HASH_COMMENT = re.compile(r"#[^\n]*")


def _tokens(code: str) -> list[tuple[int, str]] | None:
    try:
        return [
            (tok.type, tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(code).readline)
            # A statement-separating semicolon is layout, like the newline it stands for.
            if tok.type not in _SKIP and tok.string != ";"
        ]
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None


def _fallback_words(code: str) -> list[str]:
    return _HASH_COMMENT.sub("", code).lower().split()


def normalise(code: str) -> str:
    """``code`` without comments and layout, lowercased: equal strings are exact duplicates."""
    tokens = _tokens(code)
    if tokens is None:
        return " ".join(_fallback_words(code))
    return " ".join(text.lower() for kind, text in tokens if kind not in _LAYOUT)


def canonical_tokens(code: str) -> list[str]:
    """The tokens of ``code`` with identifiers renamed by first appearance (keywords, builtins and
    attribute names kept), layout as ``<nl>``/``<in>``/``<de>`` markers."""
    tokens = _tokens(code)
    if tokens is None:
        return _fallback_words(code)
    names: dict[str, str] = {}
    out: list[str] = []
    previous = ""
    for kind, text in tokens:
        if kind in _LAYOUT:
            out.append(_LAYOUT[kind])
        elif kind == token.NAME and text not in _KEEP_NAMES and previous != ".":
            out.append(names.setdefault(text, f"v{len(names)}"))
        else:
            out.append(text)
        previous = text
    return out


@dataclass(frozen=True)
class Duplicate:
    """Why a text was refused: it duplicates ``of`` (``exact``ly, or ``near`` with ``similarity``)."""

    kind: Literal["exact", "near"]
    of: str
    similarity: float


class DedupIndex:
    """The accepted texts so far; :meth:`check_and_add` admits a text only when it duplicates none."""

    def __init__(self, threshold: float = 0.85, shingle: int = 5, num_perm: int = 128, seed: int = 1) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        if shingle < 1:
            raise ValueError(f"shingle must be >= 1, got {shingle!r}")
        self.threshold = threshold
        self.shingle = shingle
        self._num_perm = num_perm
        self._seed = seed
        self._exact: dict[str, str] = {}
        self._hashes: dict[str, MinHash] = {}
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def __len__(self) -> int:
        return len(self._hashes)

    def _minhash(self, code: str) -> MinHash:
        tokens = canonical_tokens(code)
        size = self.shingle
        # A text shorter than one shingle is a single shingle of all its tokens.
        grams = {"\x1f".join(tokens[i : i + size]) for i in range(max(1, len(tokens) - size + 1))}
        minhash = MinHash(num_perm=self._num_perm, seed=self._seed)
        minhash.update_batch([gram.encode("utf-8") for gram in sorted(grams)])
        return minhash

    @staticmethod
    def _digest(code: str) -> str:
        return hashlib.sha256(normalise(code).encode("utf-8")).hexdigest()

    def find(self, code: str) -> Duplicate | None:
        """The accepted text that ``code`` duplicates, or None."""
        first = self._exact.get(self._digest(code))
        if first is not None:
            return Duplicate("exact", first, 1.0)
        return self._near(self._minhash(code))

    def _near(self, minhash: MinHash) -> Duplicate | None:
        best: Duplicate | None = None
        for key in sorted(self._lsh.query(minhash)):
            similarity = float(minhash.jaccard(self._hashes[key]))
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = Duplicate("near", key, similarity)
        return best

    def add(self, key: str, code: str) -> None:
        """Accept ``code`` under ``key`` without checking it (e.g. earlier rounds' clean samples)."""
        if key in self._hashes:
            raise ValueError(f"key {key!r} is already in the index")
        self._exact.setdefault(self._digest(code), key)
        minhash = self._minhash(code)
        self._hashes[key] = minhash
        self._lsh.insert(key, minhash)

    def check_and_add(self, key: str, code: str) -> Duplicate | None:
        """The duplicate ``code`` is of, or None after accepting it under ``key``."""
        digest = self._digest(code)
        first = self._exact.get(digest)
        if first is not None:
            return Duplicate("exact", first, 1.0)
        minhash = self._minhash(code)
        duplicate = self._near(minhash)
        if duplicate is not None:
            return duplicate
        if key in self._hashes:
            raise ValueError(f"key {key!r} is already in the index")
        self._exact[digest] = key
        self._hashes[key] = minhash
        self._lsh.insert(key, minhash)
        return None
