"""Tools for tests, benchmarks, the fleet run and chaos: never used by a running gateway."""
