"""Performance benchmarks of the harness (``make bench``); see docs/performance.md."""
