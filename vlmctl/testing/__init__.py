"""vlmctl.testing."""
