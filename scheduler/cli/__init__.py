"""The `wattpack` command: reads files, calls the core, prints results; the only place that
turns errors into exit codes."""
