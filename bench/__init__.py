"""bench: reproducible meta-learning benchmarks."""

__version__ = "0.1.0"
