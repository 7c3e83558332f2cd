"""The operator process: caches, the planning loop, the commands `operator` and `export`."""
