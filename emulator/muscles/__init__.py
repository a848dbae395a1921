"""Muscle solvers: static optimization (per frame, inverse)."""
