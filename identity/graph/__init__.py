"""Agent graphs: ordered node and connection operations, applied atomically, laid out on read."""
