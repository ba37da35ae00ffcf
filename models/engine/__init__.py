"""Training and evaluation engine (losses, schedules, loops, checkpoints, DDP), kept apart from networks."""
