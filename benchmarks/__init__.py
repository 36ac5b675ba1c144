"""taskrunner's benchmarks: `python benchmarks/run.py` (or `make bench`) from the repo root.

- run.py: the command line; runs the benchmarks asked for, prints the summary, writes
  results.json.
- harness.py: rows, alternation, medians, ratios, targets, in-process and whole-process timing.
- suite/: one module per benchmark, each with `run(config) -> Outcome`; the registry.
- peers.py: the process pools taskrunner is measured against, one function each.
- jobs.py: the generators and callbacks, imported by name in spawned workers.
- redis_bench.py: a throwaway redis-server, and the RQ side of the Redis benchmark.
"""
