"""vlmctl.checks: row checks of a config set against the real data, shared by `validate`
(sampled rows, with the processor: `vlmctl.validation`) and `train` (every row, media only)."""
