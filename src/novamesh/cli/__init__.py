"""novamesh.cli."""
