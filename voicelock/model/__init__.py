"""The network, its training (pre-training and fine-tuning), checkpoints and augmentation."""
