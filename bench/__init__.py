"""novamesh benchmarks: ``python -m bench all`` (or ``python bench/run.py all``); see BENCHMARKS.md."""
