"""DMFT of the random-feature model: inputs and checks, the loss-curve solver, the t -> inf closed forms, and the
scaling exponents with the compute-optimal frontier."""
