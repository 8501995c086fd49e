"""The in-process teacher for ``TEACHER_MODEL=local:<model>``: a transformers model generating on this host.

It speaks the same interface as :class:`~heidi_engine.agents.teacher.client.OpenAITeacher` (``map``,
``complete``, ``close``: :class:`~heidi_engine.agents.teacher.base.Teacher`), so the generate stage does not
care which backend it drives. Greedy generation (temperature 0) is batched: ``map`` hands up to
``concurrency`` prompts at a time to one left-padded ``generate`` call (see :mod:`decoder`), with the same
replies as one prompt at a time. Sampling stays one prompt at a time, seeded per prompt (``seed`` + CRC of
the prompt), so a resumed run regenerates a sample the same way it would have been generated the first time.
A reply whose prefill opens a code fence ends at the closing fence. Usage counts one request per sample and
the real prompt and completion token counts; a local model costs nothing.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from heidi_engine.agents.teacher.base import Completion, Outage, TeacherError
from heidi_engine.agents.teacher.usage import TeacherUsage

__all__ = ["LOCAL_PREFIX", "LocalTeacher", "local_model_name"]

T = TypeVar("T")
LOCAL_PREFIX = "local:"
FENCE = "```"


def local_model_name(teacher_model: str) -> str | None:
    """The model behind ``local:<model>``, or None when ``teacher_model`` is not a local teacher."""
    if not teacher_model.startswith(LOCAL_PREFIX):
        return None
    name = teacher_model[len(LOCAL_PREFIX) :].strip()
    if not name:
        raise ValueError("TEACHER_MODEL 'local:' names no model; use e.g. local:smollm2-135m-instruct")
    return name


def _plain_prompt(messages: list[dict[str, str]]) -> str:
    parts = [f"### {m['role'].capitalize()}:\n{m['content']}\n\n" for m in messages]
    return "".join(parts) + "### Assistant:\n"


class LocalTeacher:
    """A causal LM loaded in this process (see :func:`heidi_engine.agents.student.load_model_and_tokenizer`)."""

    def __init__(
        self,
        teacher_model: str,
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        name = local_model_name(teacher_model)
        if name is None:
            raise ValueError(f"not a local teacher: {teacher_model!r} (expected local:<model>)")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
        # Imported here: torch and transformers take seconds to import, and HTTP teachers never need them.
        from heidi_engine.agents.student import load_model_and_tokenizer

        self.model = teacher_model
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._seed = seed
        self._lm, self._tokenizer = load_model_and_tokenizer(name, device=device)

    def __repr__(self) -> str:
        return f"LocalTeacher(model={self.model!r})"

    def __enter__(self) -> LocalTeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the model (memory goes back once nothing else holds it)."""
        self._lm = None

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        # A trailing assistant message is a prefill: the reply continues it (in-process only; the HTTP
        # chat API has no such thing). It keeps a small model on the expected format.
        prefill = messages[-1]["content"] if messages and messages[-1].get("role") == "assistant" else ""
        turns = messages[:-1] if prefill else messages
        if not getattr(self._tokenizer, "chat_template", None):
            return _plain_prompt(turns) + prefill
        rendered = self._tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        if not isinstance(rendered, str):
            raise TypeError(f"apply_chat_template returned {type(rendered).__name__}, expected str")
        return rendered + prefill

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        settings: dict[str, Any] = {
            "max_new_tokens": self._max_tokens,
            "pad_token_id": self._tokenizer.pad_token_id,
            "eos_token_id": self._tokenizer.eos_token_id,
            "do_sample": self._temperature > 0.0,
        }
        if self._temperature > 0.0:
            settings.update(temperature=self._temperature, top_p=0.95)
        # A fresh config: the model's own may carry settings that contradict these.
        return GenerationConfig.from_dict(settings)

    def _prefill(self, messages: list[dict[str, str]]) -> str:
        return messages[-1]["content"] if messages and messages[-1].get("role") == "assistant" else ""

    def _batch(self, batch: list[list[dict[str, str]]]) -> list[Completion | TeacherError]:
        """One reply per conversation of ``batch``, generated together; all of them fail together."""
        import torch

        from heidi_engine.agents.decoder import decode_batch

        if self._lm is None:
            return [TeacherError("teacher closed", TeacherUsage()) for _ in batch]
        prompts = [self._prompt(messages) for messages in batch]
        sent = [
            TeacherUsage(requests_sent=1, input_tokens=len(self._tokenizer(p, add_special_tokens=False)["input_ids"]))
            for p in prompts
        ]
        # Every prefill in a batch opens a fence or none does (map() batches them apart).
        fenced = all(self._prefill(messages).count(FENCE) % 2 == 1 for messages in batch)
        if len(batch) == 1 and self._temperature > 0.0:
            torch.manual_seed((self._seed + zlib.crc32(prompts[0].encode("utf-8"))) % 2**32)
        try:
            decoded = decode_batch(
                self._lm,
                self._tokenizer,
                prompts,
                self._generation_config(),
                batch_size=len(prompts),
                stop=(_closes_fence, "`") if fenced else None,
            )
        except (RuntimeError, ValueError) as exc:
            reason = f"local generation failed: {type(exc).__name__}: {exc}"[:200]
            return [TeacherError(reason, spent) for spent in sent]
        replies: list[Completion | TeacherError] = []
        for messages, spent, answer in zip(batch, sent, decoded, strict=True):
            count = len(answer.tokens)
            replies.append(
                Completion(
                    text=self._prefill(messages) + answer.text,
                    usage=spent + TeacherUsage(output_tokens=count),
                    model=self.model,
                    finish_reason="length" if count >= self._max_tokens and not answer.ended else "stop",
                )
            )
        return replies

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One reply to ``messages``; raises :class:`TeacherError` when generation fails."""
        reply = self._batch([messages])[0]
        if isinstance(reply, TeacherError):
            raise reply
        return reply

    def map(
        self,
        jobs: Iterable[T],
        build_messages: Callable[[T], list[dict[str, str]]],
        on_done: Callable[[T, Completion | TeacherError], None],
        *,
        concurrency: int = 1,
        should_continue: Callable[[], bool] = lambda: True,
        on_outage: Callable[[Outage], None] | None = None,
    ) -> None:
        """Run ``jobs`` in batches of up to ``concurrency`` (one at a time when sampling), asking
        ``should_continue()`` before each batch (see OpenAITeacher.map); ``on_done`` in job order.

        A model in this process has no outages: ``on_outage`` is never called."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        size = 1 if self._temperature > 0.0 else concurrency
        source = iter(jobs)
        while should_continue():
            chunk = list(itertools.islice(source, size))
            if not chunk:
                return
            built = [(job, build_messages(job)) for job in chunk]
            replies: dict[int, Completion | TeacherError] = {}
            # A batch shares one stop rule: replies that close a prefilled fence go apart from the others.
            for fenced in (True, False):
                group = [i for i, (_, m) in enumerate(built) if (self._prefill(m).count(FENCE) % 2 == 1) is fenced]
                if group:
                    replies.update(zip(group, self._batch([built[i][1] for i in group]), strict=True))
            for index, (job, _) in enumerate(built):
                on_done(job, replies[index])


def _closes_fence(text: str) -> bool:
    return FENCE in text
