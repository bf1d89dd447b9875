"""mailmoat between real peers: swaks, smtp-source, smtp-sink and private Postfix instances
(as downstream and as sending MTA), all on 127.0.0.1. See tests/support for the fixtures."""
