"""DNS for the checks: one asynchronous resolver with a bounded TTL cache (`resolver`), and the
postscreen-style list syntax of DNS block and allow lists (`lists`)."""

from mailmoat.dns.resolver import Answer, Resolver, Status, reverse_name

__all__ = ["Answer", "Resolver", "Status", "reverse_name"]
