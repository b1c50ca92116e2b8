"""Datasets: the registry, folder layouts, readers and writers, the corpus census, packaged data."""
