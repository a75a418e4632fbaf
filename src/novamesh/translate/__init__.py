"""novamesh.translate."""
