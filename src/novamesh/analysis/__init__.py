"""novamesh.analysis."""
