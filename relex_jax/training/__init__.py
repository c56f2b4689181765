"""Training: losses (and, to come, optimiser, sharding and the train loop)."""
