"""`make bench`: throughput, latency and memory of the pipeline, as ratios measured in one run."""
