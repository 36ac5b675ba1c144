"""taskrunner's benchmarks: `python benchmarks/run.py` (or `make bench`) from the repo root."""
