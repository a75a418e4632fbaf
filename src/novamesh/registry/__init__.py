"""Service registry: auto-registered workloads with leases."""

from .registry import Registry, Workload, WorkloadPort

__all__ = ["Registry", "Workload", "WorkloadPort"]
