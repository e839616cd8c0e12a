"""Test support: synthetic scenes with ground truth, and scoring against it (used by tests, scripts and
benchmarks; not by a run)."""
