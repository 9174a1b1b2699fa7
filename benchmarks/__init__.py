"""Benchmarks of the gateway against real peers (see docs/otlp.md)."""
