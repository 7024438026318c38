"""Datasets: the synthetic 4D world, its cache and its viewer."""
