"""vlmctl.checks: findings about a config set against the real data (`validate`)."""
