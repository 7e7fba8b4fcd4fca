"""Measurement helpers for the benchmarks: timing, peak memory, machine description, plots."""
