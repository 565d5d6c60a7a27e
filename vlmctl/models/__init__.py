"""vlmctl.models."""
