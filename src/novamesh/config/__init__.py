"""novamesh.config."""
