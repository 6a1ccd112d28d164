"""RFC 3261 §10.3 registrar and the location service."""

from sipsilo.registrar.binding import Binding, aor_of, normalise_aor
from sipsilo.registrar.expiry import sweep
from sipsilo.registrar.location import LocationService, MemoryLocationService, lookup_order
from sipsilo.registrar.registrar import RegisterResult, Registrar

__all__ = [
    "Binding",
    "LocationService",
    "MemoryLocationService",
    "RegisterResult",
    "Registrar",
    "aor_of",
    "lookup_order",
    "normalise_aor",
    "sweep",
]
