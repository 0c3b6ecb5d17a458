"""The `idmirror` command line."""
