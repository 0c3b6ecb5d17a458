"""The job ledger: writes accepted as jobs, drained in per-key order, finished once."""
