"""Running the row pass over many rows: in this process, or in N forked workers that inherit
the processor, with at most 2N chunks in flight so rows are never all in memory."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from vlmctl.checks.rows import RowResult, RowState, check_rows

CHUNK = 16  # rows per task handed to a worker process

_STATE: RowState | None = None  # set before forking, inherited by the worker processes


def _check_chunk(chunk: list[tuple[int, dict]]) -> list[RowResult]:
    assert _STATE is not None
    return check_rows(_STATE, chunk)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Row tensors are tiny: torch's intra-op threads only add contention (measured ~4x slower
    image preprocessing with 2 threads on a busy 2-core machine)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _worker_init(state: RowState | None = None) -> None:
    """Forked workers inherit `_STATE`; spawned ones (not Linux) get it pickled here."""
    global _STATE
    if state is not None:
        _STATE = state
    # Row tensors are tiny: torch's own threads would only fight the other workers.
    import torch

    torch.set_num_threads(1)


def _chunks(rows: Iterator[tuple[int, dict]], size: int) -> Iterator[list[tuple[int, dict]]]:
    chunk: list[tuple[int, dict]] = []
    for item in rows:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_rows(
    state: RowState, rows: Iterator[tuple[int, dict]], num_proc: int
) -> Iterator[RowResult]:
    """Row results in row order; with num_proc > 1 from forked workers, ≤ 2N chunks in flight."""
    global _STATE
    if num_proc <= 1:
        # No processor (train's pre-flight): nothing runs in torch, so it is not imported.
        with _torch_threads(1) if state.collator is not None else contextlib.nullcontext():
            for chunk in _chunks(rows, CHUNK):
                yield from check_rows(state, chunk)
        return
    import multiprocessing as mp
    from collections import deque

    _STATE = state
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    fork = sys.platform.startswith("linux")
    ctx = mp.get_context("fork" if fork else "spawn")
    pool = ctx.Pool(num_proc, initializer=_worker_init, initargs=(None if fork else state,))
    try:
        pending: deque = deque()
        for chunk in _chunks(rows, CHUNK):
            pending.append(pool.apply_async(_check_chunk, (chunk,)))
            while len(pending) >= 2 * num_proc:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()
        _STATE = None
