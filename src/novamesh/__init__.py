"""novamesh: a service mesh with a Python control plane and a real Envoy data plane."""

__version__ = "0.1.0"
