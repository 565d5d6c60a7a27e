"""Third-party lines that mean nothing to a vlmctl user, kept out of the output.

- bitsandbytes 0.50 logs "Failed to load CPU gemm_4bit_forward from kernels-community ...
  pip install kernels" when it is imported on a CPU with AVX512-BF16, and PEFT imports it
  whether or not quantization is on. The line is dropped unless quantization is on (then it
  may explain a slow 4-bit matmul).
- wandb prints "URL not available in offline run" each time something asks an offline run for
  its URL (every logging step, through the trainer). vlmctl says once where the offline run
  is and how to upload it, so the repeats are dropped.

Only logging filters and one wrapper: cheap, nothing heavy is imported here.
"""

from __future__ import annotations

import logging

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
