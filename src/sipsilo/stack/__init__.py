"""asyncio glue between the transports and the pure transaction machines."""

from sipsilo.flow import Flow, Target
from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction

__all__ = ["Flow", "ServerTransaction", "SipStack", "Target"]
