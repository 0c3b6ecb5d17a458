"""Backfills: bulk mirrors uploaded or pulled, received into chunks, applied set-based."""
