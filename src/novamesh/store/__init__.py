"""novamesh.store."""
