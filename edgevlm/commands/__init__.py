"""CLI subcommands, one module each (see edgevlm/cli.py)."""
