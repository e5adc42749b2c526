"""Training: the stage-1 loop, checkpoints, schedules, logging and images."""
