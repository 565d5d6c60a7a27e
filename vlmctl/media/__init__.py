"""vlmctl.media."""
