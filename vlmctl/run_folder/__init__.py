"""A training run's folder as every verb reads it: the manifest, the adapter and its base, and
loading them (shared by train, merge, eval and demo, so no verb imports another)."""
