"""`python -m train`: thin entry point for training (implemented by the training issue)."""
