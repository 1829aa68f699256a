"""pylockdep's benchmarks: ``python -m benchmarks`` prints every measure of issue 17 in one table."""
