"""Threads: the long-lived inference worker, its job types, and the superqt job pool for short jobs."""
