"""`python -m cli`: the same command as `idmirror`."""

from cli.main import main

main()
