"""`scaling`: JAX sweeps, fits and theory for neural scaling laws."""

__version__ = "0.1.0"
