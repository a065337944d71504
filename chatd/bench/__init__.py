"""chatd-bench: the stress and benchmark client (see docs/benchmarks.md)."""
