"""asyncio glue between the transports and the pure transaction machines."""

from sipsilo.stack.core import SipStack
from sipsilo.stack.handles import ServerTransaction
from sipsilo.transport.flow import Flow, Target

__all__ = ["Flow", "ServerTransaction", "SipStack", "Target"]
