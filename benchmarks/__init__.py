"""vqtk's benchmarks: throughput and memory against a plain PyTorch taming baseline.

Run ``python -m benchmarks --help``; ``benchmarks/README.md`` explains the
measurements and how to read the report.
"""
