"""novamesh.api."""
