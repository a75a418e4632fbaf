"""novamesh.security."""
