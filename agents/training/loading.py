"""The student for a stage that runs it (train, eval): the environment first, then the model.

:func:`prepare_environment` must run before anything imports transformers (or torch); it imports
:mod:`heidi_engine.agents.student`, which imports torch, only once the environment is set, which is why
that import is inside it. Both turn a model that cannot be found or loaded into a
:class:`~heidi_engine.agents.runtime.FatalStageError` whose message names the fix.
"""

from __future__ import annotations

import os
from typing import Any

from heidi_engine.agents.runtime import FatalStageError

__all__ = ["load_student", "prepare_environment"]


def prepare_environment(model_name: str) -> None:
    """Check that BASE_MODEL can be found, go offline when it is on disk, and silence progress bars.

    Call it before anything imports transformers: huggingface_hub reads ``HF_HUB_OFFLINE`` once, at
    import. A model that cannot be found is a :class:`FatalStageError` whose message names the fix.
    """
    # transformers' GGUF loader uses tqdm directly; tqdm reads TQDM_DISABLE once, when torch imports it.
    os.environ.setdefault("TQDM_DISABLE", "1")
    from heidi_engine.agents.student import ModelNotAvailable, resolve_model

    try:
        ref = resolve_model(model_name)
    except ModelNotAvailable as exc:
        raise FatalStageError(str(exc)) from None
    if ref.local:
        os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_student(model_name: str, *, for_training: bool, load_in_4bit: bool = False) -> tuple[Any, Any]:
    """The student's model and tokenizer; a model that cannot be loaded is a :class:`FatalStageError`."""
    from heidi_engine.agents.student import ModelNotAvailable, load_model_and_tokenizer

    try:
        return load_model_and_tokenizer(model_name, for_training=for_training, load_in_4bit=load_in_4bit)
    except ModelNotAvailable as exc:
        raise FatalStageError(str(exc)) from None
