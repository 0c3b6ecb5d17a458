"""The HTTP edge: validates, records jobs, waits for them, maps results."""
