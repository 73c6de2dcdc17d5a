"""The recorder's warnings, on the training thread (:class:`WarningsMixin`).

Values beyond the store's dtype (once per layer), a recording that stopped (once), and the checks at close (no
snapshot at step 0, the schedule's last step never recorded).
"""

from __future__ import annotations

import warnings

import numpy as np


class WarningsMixin:
    """The warnings of :class:`~topotrace.instrument.recorder.Recorder` (a mixin of it).

    Uses the recorder's ``_pending``, ``_overflowed``, ``spec``, ``_error``, ``_warned``, ``_n``, ``path``,
    ``schedule``, ``_first_step`` and ``_last_step``.
    """

    def _check_overflow(self, wait: bool = False, stacklevel: int = 4) -> None:
        """Warn once per layer about values beyond the store's dtype, for every pass whose counts arrived.

        ``wait``: wait for the counts still in flight (CUDA). ``stacklevel`` points the warning at the caller of
        :meth:`step` (5: step, snapshot, _snapshot, here) or of :meth:`close`.
        """
        keep = []
        for step, copies in self._pending:
            if not (wait or copies.ready()):
                keep.append((step, copies))
                continue
            if wait:
                copies.wait()
            for layer, count in copies.overflow().items():
                if layer in self._overflowed:
                    continue
                self._overflowed.add(layer)
                dtype = np.dtype(self.spec.act_dtype)
                hint = ' Record with act_dtype="float32" to keep them.' if dtype.itemsize < 4 else ""
                warnings.warn(
                    f"Layer {layer!r} has values beyond the {dtype} range (±{float(np.finfo(dtype).max):g}): {count} "
                    f"at step {step} are stored as ±inf and counted with the non-finite values "
                    f"(probes/<set>/nonfinite).{hint}",
                    RuntimeWarning,
                    stacklevel=stacklevel,
                )
        self._pending = keep

    def _report(self) -> None:
        if self._error is not None and not self._warned:
            self._warned = True
            reason = " ".join(str(self._error).split()).rstrip(".")  # one line: HDF5's messages hold newlines
            warnings.warn(
                f"Recording to {self.path} stopped: {type(self._error).__name__}: {reason}. Training goes on "
                f"unrecorded; the store keeps its {self._n} committed snapshots.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _check_complete(self) -> None:
        """Warn about a run without step 0, or whose schedule's last step was never recorded (one line each)."""
        where = f"The recording to {self.path} ended"
        try:
            wants_zero = bool(self.schedule(0))
        except Exception:  # noqa: BLE001 - a schedule that cannot say: no warning
            wants_zero = False
        if self._first_step is None:
            warnings.warn(f"{where} without any snapshot: call rec.step(0) before training (the untrained model) "
                          "and rec.step(step) after every optimiser update.", RuntimeWarning, stacklevel=4)
            return
        if self._first_step != 0 and wants_zero:
            warnings.warn(f"{where} without a snapshot at step 0 (the untrained model; its first is at step "
                          f"{self._first_step}): call rec.step(0) before the first optimiser update, the report "
                          "measures every change from it.", RuntimeWarning, stacklevel=4)
        last = getattr(self.schedule, "last_step", None)
        if isinstance(last, (int, np.integer)) and not isinstance(last, bool):
            done = self._last_step
            if done is None or done < last:
                warnings.warn(f"{where} at step {done}, before the last step {int(last)} of its schedule "
                              f"{self.schedule!r}: training stopped early, or the schedule was made for more steps "
                              "than the loop ran (make it for epochs x steps per epoch).", RuntimeWarning,
                              stacklevel=4)

