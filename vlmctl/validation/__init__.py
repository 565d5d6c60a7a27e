"""`validate`'s dataset pass: the row checks of `vlmctl.checks` on sampled rows, with the
processor, summed up and reported."""
