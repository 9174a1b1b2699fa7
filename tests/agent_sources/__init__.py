"""Drivers of real agent libraries, run offline (issue 12): each source module runs scripted
scenarios (a successful run, a tool that raises, a tool that times out, a model retry, a
failed run, a slow tool) under the library's own instrumentation and returns the spans it
exported. ``record.py`` writes them as OTLP JSON under ``tests/data/agent_sources/``."""
