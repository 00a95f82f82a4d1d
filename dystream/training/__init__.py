"""Training the generator: windows from shards, the training loop, DDP, checkpoints, the CLI."""
