"""novamesh.controlplane."""
