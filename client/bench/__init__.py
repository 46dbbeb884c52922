"""The benchmark: raw engine, served, naive and Triton baselines, gateways, soak (docs/benchmark.md)."""
