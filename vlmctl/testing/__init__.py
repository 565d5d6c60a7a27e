"""Test helpers: tiny offline twins of each supported VLM family (real architectures, random
weights, a locally trained tokenizer), built in about a second with no network.

Importing this package is light: torch/transformers load only inside `build_tiny_model`.
"""

from vlmctl.testing.tiny import FAMILIES, FAMILY_INFO, build_tiny_model

__all__ = ["FAMILIES", "FAMILY_INFO", "build_tiny_model"]
