"""vlmctl.training."""
