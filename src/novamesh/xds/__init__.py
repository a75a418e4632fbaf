"""novamesh.xds."""
