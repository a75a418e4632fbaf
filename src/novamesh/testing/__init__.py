"""novamesh.testing."""
