"""Policy tuning: optuna multi-objective search over the trace replay (wattpack tune)."""
