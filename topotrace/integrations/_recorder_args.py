"""The Recorder arguments a framework callback takes: shared by the Lightning and Hugging Face callbacks."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from ..instrument.recorder import Recorder

# What a callback sets itself (from the framework) or takes as its own arguments.
SET_BY_CALLBACK = ("model", "path", "layers", "probes", "class_names", "schedule", "resume", "resume_step")
RECORDER_KWARGS = tuple(p for p in inspect.signature(Recorder).parameters if p not in SET_BY_CALLBACK)


def check_recorder_kwargs(recorder_kwargs: Mapping[str, object]) -> None:
    """Refuse Recorder arguments a callback cannot pass on.

    Raises:
        TypeError: a name the Recorder does not take, or one the callback sets itself; the message lists both.
    """
    bad = sorted(set(recorder_kwargs) - set(RECORDER_KWARGS))
    if bad:
        raise TypeError(f"The 'recorder_kwargs' of TopotraceCallback must be among {list(RECORDER_KWARGS)} "
                        f"(the callback sets {list(SET_BY_CALLBACK)} itself). Got {bad} instead.")
