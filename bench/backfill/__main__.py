"""`python -m bench.backfill --users N --agents N [--no-write]`: the backfill benchmark alone."""

from bench.backfill import main

main()
