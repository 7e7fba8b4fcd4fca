"""Training: one loop for pretraining and fine-tuning, checkpoints, distributed set-up."""
