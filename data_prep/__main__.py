"""Allows `python -m data_prep ...`; see data_prep/cli.py."""

from data_prep.cli import main

main()
