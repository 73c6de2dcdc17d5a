"""The DDP side of ``Recorder(..., shard="ddp")``: probe shares, setting up the shards, the snapshot's gather.

Every rank builds its Recorder with the same arguments (the whole probe sets) at the same point of the training
script, after ``torch.distributed.init_process_group``. Each rank then runs a contiguous share of every probe
set (:func:`shard_bounds`) and writes it to its own shard file; rank 0 writes the combined store that readers
open (:mod:`topotrace.instrument.store.shards`). Collectives run on a gloo group of their own, on the training
thread, at points every rank reaches in the same order (the constructor; each snapshot: rank 0's buffers, and the
train logits when the temperature is recorded, gathered asynchronously and awaited by the writer thread), so they
never interleave with the training's own collectives.

Setting up is all-or-nothing: every rank checks and opens its shard, then the ranks agree (an all-gather of one
flag) that all of them succeeded before rank 0 writes the combined store; a rank that failed raises its own error
and the others raise one that names it, instead of waiting forever at a barrier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .store import Store, StoreError, StoreSpec, StoreWriter, open_writer
from .store.shards import shard_file, write_combined


def shard_bounds(n: int, world: int, batch_size: int) -> list[tuple[int, int]]:
    """Contiguous shares ``[(lo, hi), ...]`` of ``n`` samples for ``world`` ranks, in rank order.

    When there are at least ``world`` probe batches, the shares are whole batches (as even as whole batches
    allow): every sample is then computed in the same batch as in a single process, so the recording is bit for
    bit the single-process one. With fewer batches the samples are split evenly (each rank one smaller batch;
    values may then differ from a single process's in the last bits, as batch sizes change floating-point sums).
    """
    batches = -(-n // batch_size)
    if batches >= world:
        cuts = [min(n, batches * r // world * batch_size) for r in range(world + 1)]
    else:
        cuts = [n * r // world for r in range(world + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class DDPShard:
    """This rank's place in a sharded recording (made by :meth:`join`)."""

    def __init__(self, rank: int, world: int, group: object):
        self.rank = rank
        self.world = world
        self._group = group

    @classmethod
    def join(cls) -> DDPShard:
        """This rank and a gloo group of all ranks; every rank must call it (``new_group`` is collective)."""
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("Recorder(shard='ddp') needs torch.distributed to be initialised: create the Recorder on "
                             "every rank after init_process_group (e.g. under torchrun), or leave shard=None and "
                             "record on rank 0 only.")
        return cls(dist.get_rank(), dist.get_world_size(), dist.new_group(backend="gloo"))

    def shares(self, probes: Sequence[object], batch_size: int) -> dict[str, tuple[int, int]]:
        """Probe name -> (lo, hi), this rank's samples; each probe set needs at least one sample per rank."""
        small = [f"{p.name!r} ({len(p)})" for p in probes if len(p) < self.world]
        if small:
            raise ValueError(f"Recorder(shard='ddp') gives each of the {self.world} ranks a share of every probe set, "
                             f"so each needs at least {self.world} samples. Got {', '.join(small)}. Use larger probe "
                             "sets or shard=None.")
        return {p.name: shard_bounds(len(p), self.world, batch_size)[self.rank] for p in probes}

    def all_ok(self, ok: bool) -> list[int]:
        """The ranks that report a failure (an all-gather of one flag per rank)."""
        flags = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(flags, torch.tensor([int(not ok)]), group=self._group)
        return [r for r, f in enumerate(flags) if int(f.item())]

    def open(self, path: Path, spec: StoreSpec, own: StoreSpec, shares: Mapping[str, tuple[int, int]],
             meta: Mapping[str, object], resume: bool, resume_step: int | None) -> StoreWriter:
        """Open this rank's shard writer; rank 0 then writes the combined store ``path``.

        A new run: neither ``path`` nor a shard may exist. A resumed run (``resume_step`` required: the checkpoint's
        step, the same on every rank): every shard is cut back to the last step that all shards hold, at most
        ``resume_step``, so the shards go on with the same steps.
        """
        own_path = shard_file(path, self.rank, self.world)
        writer = None
        err: BaseException | None = None
        try:
            common = self._check(path, resume, resume_step)
        except BaseException as e:  # noqa: BLE001 - told to the other ranks, then raised
            err = e
        failed = self.all_ok(err is None)  # also a barrier: every rank has read the shards before any is cut
        if not failed:
            try:
                writer = open_writer(own_path, own, {**meta, "shard": {"rank": self.rank, "world": self.world}},
                                     resume and own_path.exists(), common)
            except BaseException as e:  # noqa: BLE001
                err = e
            failed = self.all_ok(err is None)
        if not failed:
            everyone = self._gather_shares(shares, spec)
            if self.rank == 0:
                try:
                    write_combined(path, spec, meta, everyone, self.world)
                except BaseException as e:  # noqa: BLE001
                    err = e
            failed = self.all_ok(err is None)
        if failed:
            if writer is not None:
                writer.close()
            if err is not None:
                raise err
            raise RuntimeError(f"Setting up the sharded store {path} failed on rank(s) {failed} (see their errors); "
                               "nothing was recorded.")
        return writer

    def _gather_shares(self, shares: Mapping[str, tuple[int, int]],
                       spec: StoreSpec) -> list[dict[str, tuple[int, int]]]:
        """Every rank's shares, in rank order (an all-gather of (lo, hi) per probe set)."""
        mine = torch.tensor([v for p in spec.probes for v in shares[p.name]], dtype=torch.int64)
        out = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(out, mine, group=self._group)
        return [{p.name: (int(t[2 * i]), int(t[2 * i + 1])) for i, p in enumerate(spec.probes)} for t in out]

    def _check(self, path: Path, resume: bool, resume_step: int | None) -> int | None:
        """Refuse what cannot be recorded into; on resume, the step every shard is cut back to."""
        if not resume:
            if path.exists():
                raise FileExistsError(f"{path} exists already; resume it or choose another run name.")
            return None
        if resume_step is None:
            raise ValueError("Recorder(shard='ddp', resume=True) needs resume_step: the step of the checkpoint that "
                             "training resumes from, the same on every rank.")
        if not path.exists():
            return resume_step
        with Store(path, quick=True) as st:
            if not st.shards:
                raise StoreError(f"Cannot resume {path} with shard='ddp': it was recorded in one process. Resume it "
                                 "with shard=None on rank 0, or record into a new store.")
            if len(st.shards) != self.world:
                raise StoreError(f"Cannot resume {path} on {self.world} ranks: it was recorded on {len(st.shards)}.")
            steps = st.steps
        held = steps[steps <= resume_step]
        return int(held[-1]) if held.size else -1

    @contextlib.contextmanager
    def rank0_buffers(self, model: nn.Module) -> Iterator[None]:
        """Run the block with rank 0's buffers (BatchNorm statistics) in ``model``; its own are put back after.

        DDP keeps the parameters equal on every rank, not the buffers: each rank's last training forward updated
        its BatchNorm statistics with its own batch. The probe pass of every shard must describe one model.
        """
        buffers = [b for b in model.buffers() if b.numel()]
        if not buffers:
            yield
            return
        own = [b.detach().clone() for b in buffers]
        with torch.no_grad():
            for b in buffers:
                host = b.detach().cpu()
                dist.broadcast(host, 0, group=self._group)
                if self.rank:
                    b.copy_(host)
            try:
                yield
            finally:
                for b, o in zip(buffers, own):
                    b.copy_(o)

    def sizes(self, n: int, batch_size: int) -> list[int]:
        """Every rank's share size of a probe set of ``n`` samples, in rank order."""
        return [hi - lo for lo, hi in shard_bounds(n, self.world, batch_size)]

    def gather_start(self, part: np.ndarray, sizes: Sequence[int]) -> Callable[[], np.ndarray]:
        """Start gathering every rank's rows of ``part`` (rank r holds ``sizes[r]`` rows, shape (sizes[r], ...)).

        Returns a function that waits for the rows and returns them concatenated in rank order, shape
        (sum(sizes), ...); the writer thread calls it, so the training thread never waits for the other ranks'
        probe passes. ``part`` is copied at once (its buffer may be reused).
        """
        t = torch.from_numpy(np.ascontiguousarray(part))
        padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype)
        padded[: t.shape[0]] = t
        out = [torch.empty_like(padded) for _ in range(self.world)]
        work = dist.all_gather(out, padded, group=self._group, async_op=True)

        def result() -> np.ndarray:
            work.wait()
            return torch.cat([o[:n] for o, n in zip(out, sizes)]).numpy()

        return result
