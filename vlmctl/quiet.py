"""Third-party lines that mean nothing to a vlmctl user, kept out of the output.

- bitsandbytes 0.50 logs "Failed to load CPU gemm_4bit_forward from kernels-community ...
  pip install kernels" when it is imported on a CPU with AVX512-BF16, and PEFT imports it
  whether or not quantization is on. The line is dropped unless quantization is on (then it
  may explain a slow 4-bit matmul).
- wandb prints "URL not available in offline run" each time something asks an offline run for
  its URL (every logging step, through the trainer). vlmctl says once where the offline run
  is and how to upload it, so the repeats are dropped.

- transformers' info/warning chatter and per-load progress bars: `quiet_transformers()` while
  vlmctl owns the output (validate, preview), `quiet_process(...)` for a whole process (the
  training worker, eval, merge), skipped under VLMCTL_DEBUG=1 where the worker and eval say so.

The one place third-party logs are silenced: cheap, nothing heavy is imported at module level.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_NOISE = "gemm_4bit_forward"
WANDB_NOISE = "URL not available in offline run"


class _DropContaining(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return self.needle not in record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is not ours to drop
            return True


def quiet_bitsandbytes(quantization_on: bool = False) -> None:
    """Drop bitsandbytes' kernels hint (before anything imports bitsandbytes)."""
    if quantization_on:
        return
    logger = logging.getLogger(BNB_LOGGER)
    if not any(isinstance(f, _DropContaining) for f in logger.filters):
        logger.addFilter(_DropContaining(BNB_NOISE))


def quiet_wandb_offline_url() -> None:
    """Drop wandb's repeated "URL not available in offline run" (only that line)."""
    import wandb

    warn = wandb.termwarn
    if getattr(warn, "_vlmctl_quiet", False):
        return

    def termwarn(string: str, *args, **kwargs):
        if WANDB_NOISE in str(string):
            return None
        return warn(string, *args, **kwargs)

    termwarn._vlmctl_quiet = True  # type: ignore[attr-defined]
    wandb.termwarn = termwarn


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No info/warning chatter from transformers while vlmctl owns the output."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def quiet_process(*, errors_only: bool = True, warnings: tuple = ()) -> None:
    """For the rest of this process: no transformers progress bars, (with `errors_only`) only
    its errors, and the given warnings filtered out. Each item of `warnings` is a category, or
    (category, message regex, module regex)."""
    import warnings as _warnings

    from transformers.utils import logging as hf_logging

    if errors_only:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for item in warnings:
        category, message, module = item if isinstance(item, tuple) else (item, "", "")
        _warnings.filterwarnings("ignore", message=message, category=category, module=module)
