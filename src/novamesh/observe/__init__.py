"""novamesh.observe."""
