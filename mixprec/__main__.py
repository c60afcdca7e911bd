"""`python -m mixprec ...` is the `mixprec` command (what Ray jobs run)."""

from mixprec.cli import main

main()
