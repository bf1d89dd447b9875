"""Real peers for integration tests: a private Postfix, smtp-sink, swaks and smtp-source.

Fixtures (tests/peers/fixtures.py, registered in tests/conftest.py): ``postfix_instance``,
``postfix_downstream``, ``smtp_sink``. Plain helpers are importable from here.
"""

from .clients import SourceResult, SwaksResult, dot_stuff, smtp_source, swaks
from .common import PeerError, free_port, is_listening, wait_until
from .postfix import DeliveredMessage, PostfixInstance
from .sink import SinkMessage, SmtpSink

__all__ = [
    "DeliveredMessage",
    "PeerError",
    "PostfixInstance",
    "SinkMessage",
    "SmtpSink",
    "SourceResult",
    "SwaksResult",
    "dot_stuff",
    "free_port",
    "is_listening",
    "smtp_source",
    "swaks",
    "wait_until",
]
