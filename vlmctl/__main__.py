"""`python -m vlmctl` runs the CLI."""

from vlmctl.cli import main

main()
