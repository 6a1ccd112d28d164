"""Pure SIP protocol code: parsing, serialising and the value types.

Nothing in this package does I/O; tests/sip/test_purity.py enforces it.
"""

from sipsilo.sip import parser as _parser
from sipsilo.sip.address import NameAddr, parse_contacts
from sipsilo.sip.dates import ctime_prefix, format_rfc1123
from sipsilo.sip.errors import ParseError, SipError
from sipsilo.sip.headers import Headers, canonical_name
from sipsilo.sip.ids import new_branch, new_call_id, new_tag
from sipsilo.sip.message import Message, Request, Response
from sipsilo.sip.parser import StreamFramer, error_response, parse_message
from sipsilo.sip.status import reason_phrase
from sipsilo.sip.uri import SipUri
from sipsilo.sip.via import Via

__all__ = [
    "Headers",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SipError",
    "SipUri",
    "StreamFramer",
    "Via",
    "canonical_name",
    "compiled",
    "core_build",
    "ctime_prefix",
    "error_response",
    "format_rfc1123",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_contacts",
    "parse_message",
    "reason_phrase",
]


def compiled() -> bool:
    """Whether this package runs as compiled extension modules (``SIPSILO_MYPYC=1 pip
    install .``, see setup.py) rather than as the pure-Python modules."""
    return not _parser.__file__.endswith(".py")


def core_build() -> str:
    """``"compiled core"`` or ``"pure-Python core"``, for ``--version`` and the start-up log."""
    return "compiled core" if compiled() else "pure-Python core"
