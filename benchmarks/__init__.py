"""liverseg.benchmarks."""
