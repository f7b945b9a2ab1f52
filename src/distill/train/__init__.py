"""The Trainer (Accelerate), checkpoints, EMA, batching and logging."""
