"""Simulated survey galaxies (GalSim) for tests, benchmarks and ``skysort demo``."""
