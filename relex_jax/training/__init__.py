"""Training: losses (`losses`), the optimiser (`optim`) and the train step (`step`); sharding and the
train loop to come."""
