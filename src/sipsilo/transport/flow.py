"""Re-export of :mod:`sipsilo.flow`, where ``Flow`` and ``Target`` live.

They are plain values that the registrar, the silo and the stack use as much
as the transports do, so they sit below all of them; this name stays for code
that thinks of them as the transport's.
"""

from sipsilo.flow import CLIENT_OPENED, STREAMS, Flow, Target

__all__ = ["CLIENT_OPENED", "STREAMS", "Flow", "Target"]
