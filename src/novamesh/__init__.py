"""novamesh: a service mesh with a Python control plane and a real Envoy data plane."""

import os as _os

# Agents run gRPC servers (SDS) while they fork Envoy and the app (subprocess with a
# preexec_fn); gRPC's fork handlers then crash the child between fork and exec. Nothing here
# uses gRPC in a forked child, so fork support is off. It must be set before gRPC is imported.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
