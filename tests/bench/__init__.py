"""Benchmarks: not part of the default test run. See README "Benchmarks"."""
