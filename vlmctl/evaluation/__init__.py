"""`vlmctl eval`: generation-based evaluation (metrics, batched generation, the HTML report).

Kept apart from `vlmctl/commands/eval.py` so the training callback and `vlmctl demo` use the
same code; nothing here is imported by `vlmctl --help`.
"""
