"""novamesh.registry."""
