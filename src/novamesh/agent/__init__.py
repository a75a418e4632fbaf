"""novamesh.agent."""
