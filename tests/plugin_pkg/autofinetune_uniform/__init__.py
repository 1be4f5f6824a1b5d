"""Uniform random search for autofinetune; the entry point loads `info.INFO` only."""
