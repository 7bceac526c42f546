"""The `kmlm` command line: main.py parses and runs it; one module per command group."""
