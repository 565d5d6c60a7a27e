"""vlmctl.config."""
