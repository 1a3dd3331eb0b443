"""Servicers for API areas whose protos exist but whose logic is not built yet.

Every method of such a servicer fails with UNIMPLEMENTED and a message that
names the method, so clients, health checks and reflection already see the
whole API surface.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from splitlog_runtime.errors import Unimplemented


def placeholder_servicer(base: type, service: ServiceDescriptor) -> object:
    """Return an instance of `base` whose every RPC raises Unimplemented."""

    def make_method(full_name: str):
        def method(self, request, context):
            raise Unimplemented(
                f"{full_name} is part of the API but not served by this version "
                "of splitlog yet",
                metadata={"method": full_name},
            )

        return method

    methods = {method.name: make_method(method.full_name) for method in service.methods}
    return type(f"Placeholder{service.name}", (base,), methods)()
