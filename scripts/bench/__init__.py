"""The benchmark behind `make bench` (scripts/bench.py): throughput, latency and memory, measured."""
