"""A bounded, seeded fault campaign against the real taskrunner CLI: `make chaos`.

Run it from tests/: `python -m chaos [--seed N] [--short] [--only NAME]`. Each scenario starts
the CLI in its own session, strikes it with real signals (workers, the controller's group,
redis-server, `taskrunner work`) or runs hostile callbacks, resumes, and then compares what the
runner says (status, failures, --results) with the execution log every job appends to.
"""
