"""`python -m scheduler.cli` runs the same command as `wattpack`."""

from scheduler.cli.main import run

run()
