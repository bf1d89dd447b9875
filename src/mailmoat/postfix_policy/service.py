"""The Postfix policy service: the gateway's checks answering Postfix's `check_policy_service`.

Postfix opens a connection per smtpd process and sends a request at each stage its
restrictions name (`protocol_state`: CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE,
VRFY, ETRN), describing the SMTP client and command. The answer comes from the policy role of
the one list of checks (`assembly.build(role="policy")`) on this process's defences and store,
so it is the gateway's state and code: the allow/deny lists, bans and connection rate of
`client_address`, relay access, the harvest scores and the recipient directory.

The connect stage runs once per Postfix SMTP session (`client_address` and `client_port`;
again at a CONNECT request, or once a session is POLICY_SESSION_TIME old): so one connection
counts once towards the connection rate, as at the gateway, however many recipients it has.
Its connection slots are given back at once (Postfix holds the connection, not us, and does
not say when it ends). A refusal at connect answers every later request of that session.
RCPT and VRFY run the rcpt stage (VRFY probes count for harvest too), HELO/EHLO the helo
stage, MAIL the mail stage. A delay in a verdict (the harvest tarpit) is waited out before
the answer, holding the Postfix process as the gateway holds a client.

Bad input (`codec`) closes that connection and is counted (`policy.malformed.<reason>`);
a peer stuck mid-request is closed after POLICY_READ_TIME, an idle one after
POLICY_IDLE_TIME. A check that fails or outlasts `policy.timeout` gets DEFER_IF_PERMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from mailmoat import assembly, logs
from mailmoat.assembly import Defences
from mailmoat.config import Settings, split_endpoint
from mailmoat.limits import (
    POLICY_CONNECTIONS,
    POLICY_IDLE_TIME,
    POLICY_READ_CHUNK,
    POLICY_READ_TIME,
    POLICY_SESSION_TIME,
    POLICY_SESSIONS,
)
from mailmoat.peers import PeerGate
from mailmoat.policy.base import Client, Decision, HookResult, Pipeline, Verdict
from mailmoat.postfix_policy import answers
from mailmoat.postfix_policy.codec import (
    PolicyProtocolError,
    Request,
    RequestReader,
    encode_action,
)
from mailmoat.smtp.events import Helo, MailFrom, RcptTo
from mailmoat.stats import Stats
from mailmoat.store import Store


@dataclass(slots=True)
class _Session:
    """One Postfix SMTP session as the requests about it show it."""

    client: Client
    started: float
    refused: Verdict
    """The connect stage's refusal (then every request gets it), or None."""


class PolicyService:
    name = "policy"

    def __init__(self, settings: Settings, store: Store, defences: Defences, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self.store = store
        self.defences = defences
        self.pipeline = Pipeline(assembly.build(settings, store, defences, role="policy"))
        self.gate = PeerGate("policy", settings.policy.clients, stats)
        self.server: asyncio.Server | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._old: list[Pipeline] = []  # replaced by a reload, closed once past their use
        self.connections: set[asyncio.Task[None]] = set()
        self.sessions: OrderedDict[tuple[str, str], _Session] = OrderedDict()
        stats.gauge("policy.connections", lambda: len(self.connections))
        stats.gauge("policy.sessions", lambda: len(self.sessions))

    # ------------------------------------------------------------------ start, close
    async def start(self) -> list[str]:
        listen = self.settings.policy.listen
        await self.pipeline.start()
        try:
            if listen.startswith("/"):
                path = Path(listen)
                with contextlib.suppress(FileNotFoundError):
                    if path.is_socket():
                        path.unlink()
                old = os.umask(0o117)  # srw-rw----: Postfix's user must be in our group
                try:
                    self.server = await asyncio.start_unix_server(self._serve, path)
                finally:
                    os.umask(old)
                bound = [str(path)]
            else:
                host, port = split_endpoint(listen)
                self.server = await asyncio.start_server(
                    self._serve, host, port, reuse_address=True
                )
                sock: socket.socket = self.server.sockets[0]
                h, p = sock.getsockname()[:2]
                bound = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}"]
        except BaseException:
            await self._close_checks(self.pipeline)
            raise
        logs.event("policy_service", action="listening", address=bound[0])
        return bound

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        self._forget_all()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for pipeline in [*self._old, self.pipeline]:
            await self._close_checks(pipeline)
        self._old.clear()

    async def reload(self, settings: Settings) -> None:
        """Answer from `settings` from now on (a new directory, new lists): the checks are
        built and started anew (raises, changing nothing, when they cannot); the old ones are
        closed once the requests in flight are past their deadline. The remembered sessions
        are forgotten: their next request runs the connect stage under the new lists."""
        pipeline = Pipeline(assembly.build(settings, self.store, self.defences, role="policy"))
        try:
            await pipeline.start()
        except BaseException:
            await self._close_checks(pipeline)
            raise
        old, self.pipeline, self.settings = self.pipeline, pipeline, settings
        self.gate = PeerGate("policy", settings.policy.clients, self.stats)
        self._forget_all(old)
        self._old.append(old)
        task = asyncio.create_task(self._retire(old, settings.policy.timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Pipeline, after: float) -> None:
        await asyncio.sleep(after)
        self._old.remove(old)
        await self._close_checks(old)

    async def _close_checks(self, pipeline: Pipeline) -> None:
        """Close the checks this service made (the front belongs to the host)."""
        front = self.defences.checks()
        for check in reversed(pipeline.checks):
            if all(check is not f for f in front):
                try:
                    await check.close()
                except Exception:
                    logs.log.exception("closing the policy service's %s", check.name)

    def _forget_all(self, pipeline: Pipeline | None = None) -> None:
        for session in self.sessions.values():
            (pipeline or self.pipeline).disconnect(session.client)
        self.sessions.clear()

    # ------------------------------------------------------------------ connections
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not self.gate.admits(writer):
            writer.close()
            return
        if len(self.connections) >= POLICY_CONNECTIONS:
            self.stats.incr("policy.refused_connections")
            writer.transport.abort()
            return
        self.connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            # one short answer per request, written at once: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._requests(reader, writer)
        except PolicyProtocolError as err:
            self.stats.incr(f"policy.malformed.{err.reason}")
            logs.event("policy_service", logging.WARNING, action="closed", error=str(err))
        except TimeoutError:
            self.stats.incr("policy.closed.timeout")
        except (ConnectionError, OSError):
            self.stats.incr("policy.closed.error")
        finally:
            self.connections.discard(task)
            writer.transport.abort()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = RequestReader()
        loop = asyncio.get_running_loop()
        started = 0.0  # when the first octet of the pending request came
        while True:
            wait = POLICY_IDLE_TIME if not codec.pending else started + POLICY_READ_TIME
            if codec.pending:
                wait = max(0.0, wait - loop.time())
            async with asyncio.timeout(wait):
                data = await reader.read(POLICY_READ_CHUNK)
            if not data:
                if codec.pending:
                    raise PolicyProtocolError("truncated", "the peer left mid-request")
                return
            if not codec.pending:
                started = loop.time()
            for request in codec.feed(data):
                self.stats.incr("policy.requests")
                writer.write(encode_action(await self.answer(request)))
                await writer.drain()
            started = loop.time()  # the rest of the data starts a new request's time

    # ------------------------------------------------------------------ answers
    async def answer(self, request: Request) -> str:
        """The action for one request. Raises PolicyProtocolError for a request that is not
        Postfix's (its connection is closed: Postfix then answers 451 4.3.5)."""
        if request.get("request") != "smtpd_access_policy":
            raise PolicyProtocolError("unknown_request", request.get("request", "")[:40])
        try:
            client = Client(request.get("client_address", ""), _port(request))
        except ValueError:
            raise PolicyProtocolError("bad_client_address") from None
        try:
            async with asyncio.timeout(self.settings.policy.timeout):
                verdict = await self._verdict(client, request)
                delay = verdict.delay if isinstance(verdict, Decision) else 0.0
                if delay > 0:
                    await asyncio.sleep(delay)
        except TimeoutError:
            self.stats.incr("policy.answers.timeout")
            return answers.DEFER_TIMEOUT
        except Exception:
            logs.log.exception("policy check failed for %s", client.address)
            self.stats.incr("policy.answers.error")
            return answers.DEFER_FAILURE
        action = answers.action(verdict)
        self.stats.incr("policy.answers." + ("dunno" if action == answers.DUNNO else "refused"))
        return action

    async def _verdict(self, fresh: Client, request: Request) -> Verdict:
        state = request.get("protocol_state", "").upper()
        session = await self._session(fresh, request, state)
        if session.refused is not None:
            return session.refused
        client = session.client
        if state in ("RCPT", "VRFY"):
            address = request.get("recipient", "")
            domain = address.rpartition("@")[2].lower() if "@" in address else ""
            return await _settle(self.pipeline.run("rcpt", client, RcptTo(address, domain)))
        if state in ("HELO", "EHLO") and request.get("helo_name"):
            client.helo = request["helo_name"]
            event = Helo(client.helo, state == "EHLO")
            return await _settle(self.pipeline.run("helo", client, event))
        if state == "MAIL":
            event_mail = MailFrom(request.get("sender", ""))
            return await _settle(self.pipeline.run("mail", client, event_mail))
        return None

    async def _session(self, client: Client, request: Request, state: str) -> _Session:
        """The session the request belongs to; a new one runs the connect stage."""
        key = (client.address, request.get("client_port") or request.get("instance", ""))
        now = asyncio.get_running_loop().time()
        session = self.sessions.get(key)
        fresh = session is not None and now - session.started < POLICY_SESSION_TIME
        if session is not None and fresh and state != "CONNECT":
            return session
        if session is not None:
            self._forget(key)
        client.helo = request.get("helo_name") or None
        try:
            verdict = await _settle(self.pipeline.run("connect", client))
        finally:
            self.pipeline.disconnect(client)  # the slots: Postfix holds the connection
        refused = verdict if answers.refusal(verdict) is not None else None
        session = _Session(client, now, refused)
        self.sessions[key] = session
        while len(self.sessions) > POLICY_SESSIONS:
            self._forget(next(iter(self.sessions)))
        return session

    def _forget(self, key: tuple[str, str]) -> None:
        session = self.sessions.pop(key, None)
        if session is not None:
            self.pipeline.disconnect(session.client)


def _port(request: Request) -> int:
    text = request.get("client_port", "")
    return int(text) if text.isdigit() and len(text) <= 5 else 0


async def _settle(result: HookResult) -> Verdict:
    return await result if inspect.isawaitable(result) else result
