"""novamesh.demo."""
