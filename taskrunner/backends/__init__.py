"""Executors and run state beyond this machine: the Redis backend."""
