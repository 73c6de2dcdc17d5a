"""Snapshot schedules: plain callables ``schedule(step) -> bool`` with a readable ``repr``.

A step counts optimiser updates: step 0 is the model before training, step ``s`` the model after ``s``
updates, and a run of ``total_steps`` updates ends at step ``total_steps``. Any callable taking a step and
returning a bool works as a schedule; these cover the common cases and are cheap to call at every step::

    every(10)             # 0, 10, 20, ...
    log_spaced(2000, 50)  # about 50 steps from 0 to 2000, dense early where training changes fastest
    per_epoch(47)         # 0, 47, 94, ... (the first step of every epoch; step 0 is the untrained model)
    at_steps([0, 5, 100])

A schedule may say its last step as the attribute ``last_step`` (an int, or ``None`` when it has no last
step): :class:`at_steps` and :class:`log_spaced` do, :class:`every` and :class:`per_epoch` have none. The
recorder warns at close when a schedule's last step was never recorded (the run stopped early, or the schedule
was made for more steps than the loop ran); a plain callable has no last step.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import numpy as np


def _int(value: object, name: str, minimum: int) -> int:
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"The {name!r} parameter must be an int. Got {type(value).__name__} {value!r} instead.")
    if out < minimum:
        raise ValueError(f"The {name!r} parameter must be an int >= {minimum}. Got {out} instead.")
    return out


class every:  # noqa: N801 - reads like the function it stands for
    """True at steps ``start, start + n, start + 2n, ...``.

    Args:
        n: the interval in steps, >= 1.
        start: the first recorded step, >= 0.
    """

    last_step = None  # no last step: true forever after start

    def __init__(self, n: int, start: int = 0):
        self.n = _int(n, "n", 1)
        self.start = _int(start, "start", 0)

    def __call__(self, step: int) -> bool:
        return step >= self.start and (step - self.start) % self.n == 0

    def __repr__(self) -> str:
        return f"every({self.n})" if self.start == 0 else f"every({self.n}, start={self.start})"


class at_steps:  # noqa: N801
    """True exactly at the given steps.

    Args:
        steps: the steps to record, each >= 0.
    """

    def __init__(self, steps: Iterable[int]):
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
            raise TypeError(f"The 'steps' parameter must be an iterable of ints. Got {steps!r} instead.")
        self.steps = frozenset(_int(s, "steps", 0) for s in steps)

    @property
    def last_step(self) -> int | None:
        """The largest step of the schedule (``None`` for an empty one)."""
        return max(self.steps, default=None)

    def __call__(self, step: int) -> bool:
        return step in self.steps

    def __repr__(self) -> str:
        s = sorted(self.steps)
        shown = ", ".join(map(str, s)) if len(s) <= 8 else ", ".join(map(str, s[:4])) + ", ..., " + str(s[-1])
        return f"at_steps([{shown}])"


class log_spaced(at_steps):  # noqa: N801
    """About ``n`` steps between 0 and ``total_steps``, spaced evenly in ``log(step)``: dense early, sparse late.

    Always includes step 0 (the untrained model), step 1 and step ``total_steps`` (the final model). At the
    start consecutive steps are taken while log spacing would be denser than one step.

    Args:
        total_steps: the last step of the run, >= 1.
        n: the number of steps wanted, >= 2; fewer are returned only if ``total_steps + 1 < n``.
    """

    def __init__(self, total_steps: int, n: int):
        self.total_steps = _int(total_steps, "total_steps", 1)
        self.n = _int(n, "n", 2)
        super().__init__(self._steps(self.total_steps, self.n))

    @staticmethod
    def _steps(total: int, n: int) -> list[int]:
        if total + 1 <= n:
            return list(range(total + 1))
        # Rounding geomspace(1, total, k) merges steps near the start; raise k until n distinct steps remain.
        k = n - 1
        while True:
            s = np.unique(np.round(np.geomspace(1, total, k)).astype(np.int64))
            if len(s) + 1 >= n:
                return [0, *s.tolist()]
            k += max(1, (n - 1 - len(s)) // 2)

    def __repr__(self) -> str:
        return f"log_spaced({self.total_steps}, {self.n})"


class per_epoch(every):  # noqa: N801
    """True at the first step of every ``every``-th epoch: steps 0, E, 2E, ... for ``E = steps_per_epoch``.

    With step ``s`` meaning "after ``s`` updates", step ``k * steps_per_epoch`` is the model at the end of
    epoch ``k`` (step 0: before training).

    Args:
        steps_per_epoch: optimiser steps per epoch, >= 1.
        every: record every this many epochs, >= 1.
    """

    def __init__(self, steps_per_epoch: int, every: int = 1):
        self.steps_per_epoch = _int(steps_per_epoch, "steps_per_epoch", 1)
        self.epochs = _int(every, "every", 1)
        super().__init__(self.steps_per_epoch * self.epochs)

    def __repr__(self) -> str:
        e = "" if self.epochs == 1 else f", every={self.epochs}"
        return f"per_epoch({self.steps_per_epoch}{e})"
