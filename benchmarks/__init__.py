"""Benchmarks of multivec against real models and data; ``_data`` caches the encoded inputs."""
