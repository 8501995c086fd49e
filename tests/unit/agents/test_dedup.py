"""Duplicate detection: exact after normalisation, near after renaming, and no false alarms on the bank."""

from __future__ import annotations

import pytest
from data.task_solutions import SOLUTIONS

from heidi_engine.agents.dataset.dedup import DedupIndex, canonical_tokens, normalise

ORIGINAL = '''\
def longest_run(values):
    """Length of the longest run of equal neighbours."""
    best = 0
    current = 0
    previous = None
    for value in values:
        if value == previous:
            current += 1
        else:
            current = 1
        previous = value
        best = max(best, current)
    return best
'''

REFORMATTED = '''\
def longest_run( values ):
    """Length of the longest run of equal neighbours."""
    # scan once, remembering the previous item
    best = 0;   current = 0


    previous = None
    for value in values:   # every element
        if value == previous:
            current += 1
        else:
            current = 1
        previous = value
        best = max(best,
                   current)
    return best
'''

RENAMED = '''\
def longest_run(xs):
    """Length of the longest run of equal neighbours."""
    answer = 0
    streak = 0
    last = None
    for x in xs:
        if x == last:
            streak += 1
        else:
            streak = 1
        last = x
        answer = max(answer, streak)
    return answer
'''

DIFFERENT = '''\
def longest_run(values):
    """Length of the longest run of equal neighbours."""
    if not values:
        return 0
    runs = [1]
    for left, right in zip(values, values[1:]):
        runs.append(runs[-1] + 1 if left == right else 1)
    return max(runs)
'''


def test_normalise_drops_comments_layout_and_case() -> None:
    assert normalise("x = 1  # one\n\n\nY=2\n") == normalise("x=1\ny = 2")
    assert normalise("return a+b") != normalise("return a-b")


def test_canonical_tokens_rename_identifiers_but_keep_keywords_builtins_and_attributes() -> None:
    tokens = canonical_tokens("def f(items):\n    out = []\n    out.append(len(items))\n    return out\n")
    assert tokens[:6] == ["def", "v0", "(", "v1", ")", ":"]
    assert "append" in tokens and "len" in tokens and "return" in tokens
    assert "items" not in tokens and "out" not in tokens


def test_text_that_does_not_tokenize_falls_back_to_words() -> None:
    assert canonical_tokens("def f(:\n  '''unterminated") == ["def", "f(:", "'''unterminated"]
    assert normalise("Not CODE  # note\n at all (") == "not code at all ("


def test_reformatted_and_commented_copy_is_an_exact_duplicate() -> None:
    index = DedupIndex()
    assert index.check_and_add("r1-00000", ORIGINAL) is None
    duplicate = index.check_and_add("r1-00001", REFORMATTED)
    assert duplicate is not None and duplicate.kind == "exact" and duplicate.of == "r1-00000"
    assert len(index) == 1


def test_renamed_variables_are_a_near_duplicate() -> None:
    index = DedupIndex()
    index.add("r1-00000", ORIGINAL)
    duplicate = index.find(RENAMED)
    assert duplicate is not None and duplicate.kind == "near" and duplicate.of == "r1-00000"
    assert duplicate.similarity >= 0.85


def test_a_small_edit_stays_a_near_duplicate_and_a_rewrite_does_not() -> None:
    index = DedupIndex()
    index.add("a", ORIGINAL)
    edited = ORIGINAL.replace("current = 0", "current = -1")
    duplicate = index.find(edited)
    assert duplicate is not None and duplicate.kind == "near"
    assert index.find(DIFFERENT) is None


def test_no_two_reference_solutions_of_the_bank_are_duplicates() -> None:
    index = DedupIndex()
    flagged = {key: index.check_and_add(key, code) for key, code in SOLUTIONS.items()}
    assert {key: dup for key, dup in flagged.items() if dup is not None} == {}
    assert len(index) == len(SOLUTIONS)


def test_verdicts_are_the_same_on_every_run() -> None:
    first, second = DedupIndex(), DedupIndex()
    for index in (first, second):
        index.add("a", ORIGINAL)
    one, two = first.find(RENAMED), second.find(RENAMED)
    assert one == two


def test_bad_settings_and_repeated_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DedupIndex(threshold=0)
    with pytest.raises(ValueError, match="shingle"):
        DedupIndex(shingle=0)
    index = DedupIndex()
    index.add("a", ORIGINAL)
    with pytest.raises(ValueError, match="already"):
        index.add("a", DIFFERENT)
