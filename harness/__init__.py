"""Benchmark LLM inference optimizations for speed and quality together."""

__version__ = "0.1.0"
