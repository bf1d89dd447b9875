"""Checks as hooks on the stages of a session, run in order by a pipeline (Haraka's cut).

A check implements any of the hook methods. A hook answers `None` to let the session go on, a
`Reply` that refuses the command (the first refusal wins), or a `Decision` that can also slow
the answer down (tarpit) or close the session after it. A hook may be a plain method or a
coroutine function: the pipeline stays synchronous until a hook actually needs to wait, so the
common path costs no task and no await.

The `rejected` stage is different: it runs after the client got an error reply (from the engine,
a check, or the session's own deadlines), so its hooks cannot change that reply. They observe
it (strikes, counters) and may delay what follows (tarpit) or close the session; a `reply` in
such a verdict is the closing line (default `421 4.7.0`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, ClassVar, Generic, TypeVar

from mailmoat.limits import MAX_REPLY_DELAY as MAX_DELAY
from mailmoat.message import Message
from mailmoat.smtp.events import Helo, MailFrom, RcptTo, Rejected
from mailmoat.smtp.replies import Reply

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with more to it than a reply."""

    reply: Reply | None = None
    """None: the command goes on (a plain delay, the other checks still run)."""
    delay: float = 0.0
    """Seconds to wait before answering (a tarpit)."""
    close: bool = False
    """Close the session after the reply."""
    reason: str = ""
    """Which check decided (its `name`), for logs and counters; the pipeline fills it in."""


Verdict = Reply | Decision | None
HookResult = Verdict | Awaitable[Verdict]

STAGES = ("connect", "helo", "mail", "rcpt", "data", "message", "rejected")


@dataclass(slots=True)
class Client:
    """What the checks may know about the client; never the socket."""

    address: str
    port: int
    tls: bool = False
    helo: str | None = None
    trusted: bool = False
    """In `admission.allow_networks`: exempt from limits, rates, bans, pregreet and tarpit."""
    errors: int = 0
    """Error replies the client got in this session so far."""
    conn_id: int = 0
    """The supervisor's number for this connection (worker processes only; 0 otherwise)."""
    waited: float = 0.0
    """Seconds the client had been greeted and silent when its session started elsewhere than
    where it was greeted (the supervisor holds a greeted connection until it talks,
    `server.hold`): its session's deadlines count them."""
    ip: IPv4Address | IPv6Address = field(init=False)
    """The client's address; an IPv4-mapped IPv6 address is given as the IPv4 one (and so is
    `address`, so that logs, `Received:`, bans and rate keys all name it alike)."""
    state: object | None = field(default=None, init=False, repr=False)
    """The DNS checks' state for this session (policy.score.SessionState, holding their
    `Slot`s), kept here so that each of their hooks finds it with one attribute read."""
    tags: tuple[str, ...] = field(default=(), init=False, repr=False)
    """Per-session marks that checks leave for their own later hooks (a tuple: a few at most,
    and one per session costs less than a set, and nothing for the garbage collector)."""

    def __post_init__(self) -> None:
        ip = address_ip(self.address)
        if ip.version == 4 and ":" in self.address:  # IPv4-mapped: named as the IPv4 it is
            self.address = str(ip)
        self.ip = ip

    def tag(self, name: str) -> None:
        if name not in self.tags:
            self.tags = (*self.tags, name)

    def has(self, name: str) -> bool:
        return name in self.tags

    def untag(self, name: str) -> bool:
        """Remove a mark; True if it was there."""
        if name not in self.tags:
            return False
        self.tags = tuple(t for t in self.tags if t != name)
        return True


class Slot(Generic[T_co]):
    """A named, typed place in a session's check state (`policy.score.SessionState`) where one
    check leaves its result for the others. The check that fills it lists it in `writes`;
    those that read it list it in `reads`. A slot read by other checks is declared, with its
    result type, in `policy.results`, so that no check imports another. Compared by identity
    (a cheap dictionary key)."""

    __slots__ = ("name", "per_transaction")

    def __init__(self, name: str, *, per_transaction: bool = False) -> None:
        self.name = name
        self.per_transaction = per_transaction
        """Emptied at every MAIL FROM; otherwise kept for the session."""

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


class Check:
    """Base class: override the hooks a defence needs. Every hook may also be `async def`."""

    name = "check"
    writes: ClassVar[tuple[Slot[Any], ...]] = ()
    """The slots this check fills (in a session's `SessionState`)."""
    reads: ClassVar[tuple[Slot[Any], ...]] = ()
    """The slots of other checks this check reads: they must come earlier in the order."""

    def connect(self, client: Client) -> HookResult:
        return None

    def helo(self, client: Client, event: Helo) -> HookResult:
        return None

    def mail(self, client: Client, event: MailFrom) -> HookResult:
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        return None

    def data(self, client: Client) -> HookResult:
        return None

    def message(self, client: Client, message: Message) -> HookResult:
        return None

    def rejected(self, client: Client, event: Rejected) -> HookResult:
        """The client just got the error reply in `event` (already sent or queued)."""
        return None

    def disconnect(self, client: Client) -> None:
        """The session ended (whatever the reason); release what `connect` took."""
        return None

    async def start(self) -> None:
        """The gateway is starting: load what the check needs (before any connection)."""
        return None

    async def close(self) -> None:
        """The gateway has stopped: end background work, release connections."""
        return None


class Pipeline:
    """Runs the checks that implement a stage, in order, until one refuses."""

    def __init__(self, checks: list[Check], *, skip_connect: Iterable[Check] = ()) -> None:
        """`skip_connect`: checks whose connect hook runs in another process (a worker's
        defences: the supervisor admitted the client); their other hooks run here."""
        self.checks = checks
        elsewhere = {id(c) for c in skip_connect}
        self._hooks: dict[str, list[Callable[..., HookResult]]] = {
            stage: [
                getattr(c, stage)
                for c in checks
                if getattr(type(c), stage) is not getattr(Check, stage)
                and not (stage == "connect" and id(c) in elsewhere)
            ]
            for stage in STAGES
        }
        self._names = {
            stage: [getattr(h, "__self__", None) for h in hooks]
            for stage, hooks in self._hooks.items()
        }

        self._disconnect = [
            c.disconnect for c in checks if type(c).disconnect is not Check.disconnect
        ]

    def runs(self, stage: str) -> bool:
        """Whether some check looks at `stage`."""
        return bool(self._hooks[stage])

    def run(self, stage: str, *args: Any) -> HookResult:
        hooks = self._hooks[stage]
        delay = 0.0
        for i, hook in enumerate(hooks):
            verdict = hook(*args)
            if verdict is None:  # the common answer: no isawaitable (an ABC check) for it
                continue
            if inspect.isawaitable(verdict):
                return self._finish(verdict, stage, i, args, delay)
            final, delay = _fold(verdict, delay)
            if final:
                return _decided(verdict, delay, self._names[stage][i])
        return Decision(delay=delay) if delay else None

    async def _finish(
        self,
        pending: Awaitable[Verdict],
        stage: str,
        at: int,
        args: tuple[Any, ...],
        delay: float,
    ) -> Verdict:
        """The rest of a stage once a hook answered with an awaitable (hook `at`)."""
        hooks = self._hooks[stage]
        verdict = await pending
        for i in range(at + 1, len(hooks)):
            if verdict is not None:
                final, delay = _fold(verdict, delay)
                if final:
                    return _decided(verdict, delay, self._names[stage][i - 1])
            result = hooks[i](*args)
            verdict = await result if result is not None and inspect.isawaitable(result) else result
        if verdict is not None:
            final, delay = _fold(verdict, delay)
            if final:
                return _decided(verdict, delay, self._names[stage][len(hooks) - 1])
        return Decision(delay=delay) if delay else None

    def disconnect(self, client: Client) -> None:
        for hook in self._disconnect:
            hook(client)

    async def start(self) -> None:
        for check in self.checks:
            await check.start()

    async def close(self) -> None:
        for check in reversed(self.checks):
            await check.close()


def address_ip(address: str) -> IPv4Address | IPv6Address:
    """A client's address as an IP (a link-local zone dropped, IPv4-mapped as IPv4);
    ValueError when it is none."""
    return plain_ip(ip_address(address.split("%", 1)[0]))


def plain_ip(ip: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _fold(verdict: Reply | Decision, delay: float) -> tuple[bool, float]:
    """(does this verdict end the stage?, the delay so far including its own)."""
    if isinstance(verdict, Reply):
        return True, delay
    return verdict.reply is not None or verdict.close, min(delay + verdict.delay, MAX_DELAY)


def _decided(verdict: Reply | Decision, delay: float, check: object) -> Decision:
    """The final verdict of a stage as a Decision naming the check that made it."""
    reason = getattr(check, "name", "") or "policy"
    if isinstance(verdict, Reply):
        return Decision(reply=verdict, delay=delay, reason=reason)
    return Decision(
        reply=verdict.reply, delay=delay, close=verdict.close, reason=verdict.reason or reason
    )
