"""Coordination between processes: the counted reservation (and, in time, the lease) with a
store for a fleet (Redis), one machine (SQLite in CACHE_DIR) and one process (memory)."""
