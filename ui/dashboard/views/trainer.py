"""The Trainer view: progress and ETA, the loss and its sparkline, optimizer gauges, GPUs or host.

With no GPU (no driver, no NVML, or sampling off) the view says "no GPU" plainly and shows the host's
CPU and RAM instead, as the supervisor's sampler reports them.
"""

from __future__ import annotations

from rich.text import Text

from heidi_engine.bus.state import GpuInfo, RunState, TrainerState
from heidi_engine.ui.dashboard.frame import Frame
from heidi_engine.ui.dashboard.views.eval import eval_marks
from heidi_engine.ui.text import (
    DASH,
    bar,
    box,
    fmt_duration,
    fmt_float,
    fmt_lr,
    fmt_mb,
    fmt_rate,
    label_value,
    safe,
    sparkline,
)


def current_trainer(state: RunState) -> TrainerState:
    """The trainer gauges of the round in progress: an earlier round's last step is not shown as this
    one's (a new round's trainer reports nothing until it has loaded the model and made a step)."""
    trainer = state.trainer
    if state.current_stage == "train" and trainer.round != state.current_round:
        return TrainerState(round=state.current_round)
    return trainer


def loading(state: RunState) -> bool:
    """True while the train stage runs but its trainer has not reported a step yet."""
    return state.current_stage == "train" and current_trainer(state).total == 0


def eta_s(frame: Frame) -> float | None:
    """The trainer's own ETA, else the remaining steps at the measured step rate."""
    trainer = current_trainer(frame.state)
    if trainer.eta_s is not None:
        return trainer.eta_s
    rate = frame.rates.train_steps_s
    if trainer.total and rate:
        return max(0, trainer.total - trainer.step) / rate
    return None


def _no_gpu_reason(message: str | None) -> str:
    if not message:
        return "no GPU reported by the supervisor"
    text = safe(message, 160)
    # The sampler's messages may already open with "no GPU: <reason>"; say it once.
    return text[len("no gpu:") :].lstrip() if text.lower().startswith("no gpu:") else text


def _narrow_gpu_line(gpu: GpuInfo, width: int) -> Text:
    """One GPU in a narrow column: the utilisation bar and figures, VRAM as numbers only."""
    line = Text(f"GPU{gpu.index} ", style="bold")
    line.append_text(bar(None if gpu.util_pct is None else gpu.util_pct / 100, max(4, width - 30)))
    line.append(f" {DASH if gpu.util_pct is None else f'{gpu.util_pct:.0f}%'}")
    line.append(f" · {gpu.vram_used_mb / 1024:.1f}/{gpu.vram_total_mb / 1024:.1f} GiB", style="dim")
    return line


def system_lines(state: RunState, *, compact: bool, width: int) -> list[Text]:
    """Per-GPU VRAM and utilisation bars, or "no GPU" and the host's CPU and RAM."""
    # What is left of the row after the labels and figures, shared by the two bars.
    bar_w = max(4, min(30, (width - 40) // 2 if compact else (width - 86) // 2))
    lines: list[Text] = []
    for gpu in state.gpus:
        if compact and width < 56:
            lines.append(_narrow_gpu_line(gpu, width))
            continue
        line = Text(f"GPU{gpu.index} ", style="bold")
        if not compact and gpu.name:
            line.append(f"{safe(gpu.name, 24):<24} ", style="dim")
        vram = gpu.vram_used_mb / gpu.vram_total_mb if gpu.vram_total_mb else None
        line.append("VRAM ", style="dim")
        line.append_text(bar(vram, bar_w))
        line.append(f" {fmt_mb(gpu.vram_used_mb)}/{fmt_mb(gpu.vram_total_mb)}  ")
        line.append("util ", style="dim")
        line.append_text(bar(None if gpu.util_pct is None else gpu.util_pct / 100, bar_w))
        line.append(f" {DASH if gpu.util_pct is None else f'{gpu.util_pct:.0f}%'}")
        if not compact:
            if gpu.temperature_c is not None:
                line.append(f"  {gpu.temperature_c:.0f}°C", style="dim")
            if gpu.power_w is not None:
                line.append(f"  {gpu.power_w:.0f} W", style="dim")
        lines.append(line)
    if state.gpus:
        return lines
    none = Text("no GPU", style="bold yellow")
    none.append(f" · {_no_gpu_reason(state.gpu_message)}", style="yellow")
    lines.append(none)
    host = state.host
    if host is None:
        lines.append(Text("host CPU/RAM not reported yet", style="dim"))
        return lines
    if not compact:
        bar_w = max(4, min(30, width - 30))  # host rows carry less text than GPU rows
    cpu = Text("CPU " if compact else "host CPU ", style="dim")
    cpu.append_text(bar(host.cpu_pct / 100, bar_w))
    cpu.append(f" {host.cpu_pct:.0f}%")
    ram = Text("RAM " if compact else "host RAM ", style="dim")
    ram.append_text(bar(host.ram_used_mb / host.ram_total_mb if host.ram_total_mb else None, bar_w))
    ram.append(f" {fmt_mb(host.ram_used_mb)}/{fmt_mb(host.ram_total_mb)}")
    if compact:
        cpu.append("  ")
        cpu.append_text(ram)
        lines.append(cpu)
    else:
        lines += [cpu, ram]
    return lines


def render_trainer(frame: Frame, width: int, height: int | None) -> list[Text]:
    """Step/total with a bar and ETA, loss with its history, learning rate, grad norm, speed, devices."""
    trainer = current_trainer(frame.state)
    inner = max(20, width - 4)
    lines: list[Text] = []

    progress = Text(f"round {trainer.round} · ", style="dim")
    if loading(frame.state):
        progress.append("loading the model…", style="bold yellow")
    elif trainer.total:
        fraction = trainer.step / trainer.total
        progress.append(f"step {trainer.step:,}/{trainer.total:,} ", style="bold")
        progress.append_text(bar(fraction, max(10, inner - 50), style="cyan"))
        progress.append(f" {fraction:.0%}", style="bold")
    else:
        progress.append("no training step yet", style="dim")
    progress.append(f"  ETA {fmt_duration(eta_s(frame))}", style="bold")
    lines.append(progress)

    history = [loss for _, loss in trainer.loss_history]
    loss = label_value("loss", fmt_float(trainer.loss))
    if history:
        loss.append(
            f"   min {min(history):.4g} · first {history[0]:.4g} · {len(history)} "
            f"point{'' if len(history) == 1 else 's'}",
            style="dim",
        )
    lines.append(loss)
    if history:
        lines.append(Text(sparkline(history, inner), style="magenta"))
        marks = eval_marks(frame.state, min(inner, len(history)))
        if marks is not None:
            lines.append(marks)
    else:
        lines.append(Text("no loss reported yet", style="dim"))

    gauges = label_value("lr", fmt_lr(trainer.learning_rate))
    gauges.append_text(label_value("   grad norm", fmt_float(trainer.grad_norm)))
    gauges.append_text(label_value("   tokens/s", fmt_rate(trainer.tokens_per_s, "")))
    gauges.append_text(label_value("   samples/s", fmt_rate(trainer.samples_per_s, "")))
    gauges.append_text(label_value("   memory", fmt_mb(trainer.memory_mb)))
    lines.append(gauges)
    if trainer.rank_peak_mb:
        # Every rank of a torchrun/accelerate job (one GPU each), or the one trainer process.
        ranks = " · ".join(f"rank {rank} {fmt_mb(mb)}" for rank, mb in enumerate(trainer.rank_peak_mb))
        lines.append(label_value("peak memory", ranks))

    for source, script in frame.state.external.items():
        # A training script reporting beside the run: shown as itself, its steps never the run's.
        line = Text(f"{source} ", style="bold blue")
        line.append(f"round {script.round} · step {script.step:,}/{script.total:,}")
        line.append_text(label_value(" · loss", fmt_float(script.loss)))
        lines.append(line)

    training = box(Text("Training", style="bold"), lines, width)
    title = Text("GPUs" if frame.state.gpus else "Host (no GPU)", style="bold")
    return training + box(title, system_lines(frame.state, compact=False, width=width - 4), width)
