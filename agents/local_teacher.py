"""The in-process teacher for ``TEACHER_MODEL=local:<model>``: a transformers model generating on this host.

It speaks the same interface as :class:`~heidi_engine.agents.teacher.OpenAITeacher` (``map``,
``complete``, ``close``), so the generate stage does not care which backend it drives. Generation is
sequential (one model, one forward pass at a time); ``concurrency`` is accepted and ignored. Usage counts
one request per sample and the real prompt and completion token counts; a local model costs nothing.
Sampling is seeded per prompt (``seed`` + CRC of the prompt), so a resumed run regenerates a sample the
same way it would have been generated the first time.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .teacher import Completion, Outage, TeacherError, TeacherUsage

__all__ = ["LOCAL_PREFIX", "LocalTeacher", "local_model_name"]

T = TypeVar("T")
LOCAL_PREFIX = "local:"


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
        from .student import load_model_and_tokenizer

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

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One reply to ``messages``; raises :class:`TeacherError` when generation fails."""
        import torch

        if self._lm is None:
            raise TeacherError("teacher closed", TeacherUsage())
        prompt = self._prompt(messages)
        encoded = self._tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        prompt_len = int(encoded["input_ids"].shape[1])
        spent = TeacherUsage(requests_sent=1, input_tokens=prompt_len)
        torch.manual_seed((self._seed + zlib.crc32(prompt.encode("utf-8"))) % 2**32)
        device = next(self._lm.parameters()).device
        try:
            with torch.inference_mode():
                output = self._lm.generate(
                    input_ids=encoded["input_ids"].to(device),
                    attention_mask=encoded["attention_mask"].to(device),
                    generation_config=self._generation_config(),
                )
        except (RuntimeError, ValueError) as exc:
            raise TeacherError(f"local generation failed: {type(exc).__name__}: {exc}"[:200], spent) from None
        new_tokens = output[0, prompt_len:]
        count = int(new_tokens.shape[0])
        ended = count > 0 and int(new_tokens[-1]) == self._tokenizer.eos_token_id
        text = str(self._tokenizer.decode(new_tokens, skip_special_tokens=True))
        if messages and messages[-1].get("role") == "assistant":
            text = messages[-1]["content"] + text
        return Completion(
            text=text,
            usage=spent + TeacherUsage(output_tokens=count),
            model=self.model,
            finish_reason="length" if count >= self._max_tokens and not ended else "stop",
        )

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
        """Run ``jobs`` one at a time, asking ``should_continue()`` before each (see OpenAITeacher.map).

        A model in this process has no outages: ``on_outage`` is never called."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        source = iter(jobs)
        while should_continue():
            try:
                job = next(source)
            except StopIteration:
                return
            messages = build_messages(job)
            try:
                result: Completion | TeacherError = self.complete(messages)
            except TeacherError as exc:
                result = exc
            on_done(job, result)
