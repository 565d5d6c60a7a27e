"""vlmctl.commands."""
