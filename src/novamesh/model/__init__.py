"""novamesh.model."""
