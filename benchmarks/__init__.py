"""Performance benchmarks of a source checkout (not installed): ``registry bench`` runs :mod:`benchmarks.bench`."""
