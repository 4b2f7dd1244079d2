"""The `fersearch` command line's pieces; fersearch/cli.py assembles them."""
