"""vlmctl: fine-tune vision-language models from four YAML files."""

__version__ = "0.1.0"
