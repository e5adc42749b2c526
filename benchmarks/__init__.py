"""vqtk's benchmarks: throughput and memory against a plain PyTorch taming baseline, and tokenizer quality.

Run ``python -m benchmarks --help``; ``python -m benchmarks.quality --help`` trains
every shipped quantizer on one budget and tables their held-out quality;
``benchmarks/README.md`` explains the measurements and how to read the report.
"""
