"""Broken neural scaling laws (Caballero et al. 2023): the addition toy (the fits and benchmark are `scaling.fit`)."""
