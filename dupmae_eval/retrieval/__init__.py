"""From vectors to runs: indexes, searchers, retrieval modes, and the single-run jobs."""
