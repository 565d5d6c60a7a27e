"""`vlmctl merge`: a LoRA adapter merged into its base model, so serving behaves like training.

One module per concern, imports pointing one way: plan -> output; loading, lora, st_io ->
keymap -> streaming; verify; support_files; run (orchestration). The CLI entry is
`vlmctl/commands/merge.py`, which calls `vlmctl.merge.run.run_merge`.
"""
