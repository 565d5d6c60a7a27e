"""vlmctl.data."""
