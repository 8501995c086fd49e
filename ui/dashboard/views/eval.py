"""The Eval view (6): base against adapter on the run's held-out set, round by round, and the best round.

The table shows, per evaluated round, the held-out val loss and pass@1 (on the held-out tasks' own unit
tests, and on the HumanEval subset) of the base student and of that round's adapter, the difference,
and the adapter's Wilson 95% interval with its ``n``; the best round is marked. Below it, pass@1 and val
loss by round as charts.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from heidi_engine.bus.state import EvalSample, RunState
from heidi_engine.ui.dashboard.frame import Frame
from heidi_engine.ui.eval_text import diff, eval_line, interval, num, scores_of, signed
from heidi_engine.ui.text import DASH, box, cell, sparkline

__all__ = ["eval_marks", "render_eval"]

_CHART_W = 40


_COLUMNS = (("round", 7), ("val loss base→adapter", 24), ("Δ", 8), ("pass@1 base→adapter", 21), ("Δ", 7),
            ("adapter 95% CI", 22), ("HumanEval", 12))  # fmt: skip
# Below this many cells inside the box every column still shows, with short titles and no padding
# (76 inside an 80-column terminal): a clipped interval or HumanEval column would hide the outcome.
_COMPACT = (("rnd", 5), ("loss b→a", 13), ("Δ", 7), ("pass@1 b→a", 10), ("Δ", 6), ("adapter CI", 18),
            ("HumanEval", 10))  # fmt: skip
_FULL_W = sum(size + 1 for _, size in _COLUMNS)


def _columns(width: int) -> tuple[tuple[str, int], ...]:
    """The table's columns for a box ``width`` cells wide."""
    return _COLUMNS if width - 4 >= _FULL_W else _COMPACT


def _row(sample: EvalSample, best: bool, columns: tuple[tuple[str, int], ...]) -> Text:
    base, adapter = scores_of(sample)
    arrow = " → " if columns is _COLUMNS else "→"
    values = (
        f"{sample.round}{' ★' if best else ''}",
        f"{num(base.val_loss, 3)}{arrow}{num(adapter.val_loss, 3)}",
        signed(diff(adapter.val_loss, base.val_loss), 3),
        f"{num(base.val_pass_at_1, 2)}{arrow}{num(adapter.val_pass_at_1, 2)}",
        signed(diff(adapter.val_pass_at_1, base.val_pass_at_1), 2),
        interval(adapter.val_ci, adapter.n_val),
        f"{num(base.humaneval_pass_at_1, 2)}→{num(adapter.humaneval_pass_at_1, 2)}",
    )
    line = Text()
    for (_, width), value in zip(columns, values, strict=True):
        line.append_text(cell(value, width, style="bold green" if best else ""))
        line.append(" ")
    return line


def _chart(label: str, values: Sequence[float | None], digits: int, width: int) -> Text:
    known = [v for v in values if v is not None]
    text = Text(f"{label:<22}", style="dim")
    if not known:
        return text.append(DASH)
    text.append(sparkline(known, min(width, _CHART_W)), style="magenta")
    text.append(f"  {' '.join(num(v, digits) for v in values[-6:])}", style="dim")
    return text


def eval_marks(state: RunState, width: int) -> Text | None:
    """A row under the trainer's loss sparkline: ▲ where each evaluated round ended, with its adapter's
    held-out val loss; None when no round was evaluated or the curve is empty."""
    history = state.trainer.loss_history
    if not state.evals or len(history) < 2:
        return None
    first, last = history[0][0], history[-1][0]
    starts = state.trainer.round_starts
    cells = [" "] * width
    labels = []
    for sample in state.evals:
        end = starts.get(sample.round + 1, last if sample.round >= state.trainer.round else None)
        if end is None:
            continue
        column = min(width - 1, max(0, round((end - first) / max(1, last - first) * (width - 1))))
        cells[column] = "▲"
        loss = scores_of(sample)[1].val_loss
        labels.append(f"r{sample.round} {num(loss, 3)}")
    row = Text("".join(cells), style="green")
    row.append(f"  eval val loss: {' · '.join(labels)}", style="dim")
    return row


def render_eval(frame: Frame, width: int, height: int | None) -> list[Text]:
    """The per-round table (base, adapter, delta, interval; best round ★) and the charts by round."""
    state = frame.state
    evals = state.evals
    columns = _columns(width)
    header = Text()
    for title, size in columns:
        header.append_text(cell(title, size, style="bold"))
        header.append(" ")
    rows = [_row(sample, sample.round == state.best_round, columns) for sample in evals]
    if not rows:
        rows = [
            Text("no round evaluated yet: the eval stage reports after each round's training", style="dim")
        ]
    base_round = next((e.base_round for e in reversed(evals) if e.base_round is not None), None)
    note = Text(
        f"base scored once, in round {base_round}; " if base_round is not None else "", style="dim"
    ).append("rates are pass@1 on the held-out tasks' own tests; ★ best round", style="dim")
    table = box(Text("Eval: base vs adapter on the held-out set", style="bold"), [header, *rows, note], width)
    inner = max(10, width - 30)
    adapters = [scores_of(e)[1] for e in evals]
    charts = [
        _chart("held-out pass@1", [a.val_pass_at_1 for a in adapters], 2, inner),
        _chart("held-out val loss", [a.val_loss for a in adapters], 3, inner),
        _chart("HumanEval pass@1", [a.humaneval_pass_at_1 for a in adapters], 2, inner),
        Text(eval_line(evals, state.best_round), style="bold"),
    ]
    return table + box(Text("By round (adapter)", style="bold"), charts, width)
