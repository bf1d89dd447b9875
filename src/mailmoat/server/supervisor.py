"""The supervisor of worker processes (`server.workers` > 1): one node, several cores.

The supervisor owns the listening sockets and admission, exactly as the one-process gateway
does (`Front`): lists, bans, the global and per-network caps, connection rates, pregreet and
tarpit verdicts, stress mode, and the store behind them. An admitted connection gets its 220
at once. The supervisor runs up to `LOCAL_SESSIONS` sessions itself while at most `LOCAL_RATE`
connections arrive a second (so a light load never waits for a hand-over); any further
connection is handed to a worker, descriptor and all, over that worker's link (to the worker
that had the last connection while it is at most `SPREAD` sessions busier than the least
busy one, else to the least busy), once its client has sent something (`hold`: a client
that leaves after the 220 is closed here, without a session). So every limit is
counted in one place and holds across the workers: a worker gives a connection's slots back
when it ends, sends its strikes here, and uses this store for everything the defences share.

A worker that dies loses its open sessions (their clients retry: nothing was acknowledged
that was not delivered) and gives their slots back; the supervisor starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from typing import Any

from mailmoat import logs
from mailmoat.config import ServerSettings, Settings, default_of
from mailmoat.limits import HOLD_TIME, LOCAL_RATE, LOCAL_SESSIONS, RELOAD_TIMEOUT, SNAPSHOT_TIMEOUT
from mailmoat.limits import LINK_MAX_FDS as MAX_FDS
from mailmoat.limits import LINK_MAX_MESSAGE as MAX_MESSAGE
from mailmoat.limits import WORKER_RESPAWN_DELAY as RESPAWN_DELAY
from mailmoat.limits import WORKER_SPREAD as SPREAD
from mailmoat.limits import WORKER_START_TIMEOUT as START_TIMEOUT
from mailmoat.policy.bans import STRIKE_REASONS
from mailmoat.policy.base import Client, Pipeline, Verdict
from mailmoat.server.front import Front, local_spool_share, raise_fd_limit
from mailmoat.server.gateway import Gateway
from mailmoat.server.hold import VOUCHED, GreetedHold
from mailmoat.server.lane import CleanLane
from mailmoat.server.link import (
    Closed,
    Failed,
    Handover,
    Link,
    Message,
    Ready,
    Stop,
    StressMode,
    Strike,
    socket_pair,
)
from mailmoat.server.local_slots import LocalSlots
from mailmoat.server.session import R_SHUTDOWN
from mailmoat.server.worker_stats import add_worker
from mailmoat.stats import merge_console, merge_histograms
from mailmoat.store import open_store
from mailmoat.store.remote import OPERATIONS


class WorkerProcess:
    __slots__ = (
        "failure", "index", "lane", "last", "link", "outbox", "pid", "proc", "ready",
        "sessions", "settings",
    )  # fmt: skip

    def __init__(self, index: int, proc: subprocess.Popen[bytes], lane: bool = False) -> None:
        self.index = index
        self.lane = lane  # the clean lane's worker (server/lane.py): known clients only
        self.proc = proc
        self.pid = proc.pid
        self.link: Link
        self.ready = False
        self.sessions = 0
        self.last = 0  # the number of the last connection it was given
        self.failure = ""  # why it could not start, as it said
        self.settings = b""  # the settings (JSON) it was started with
        # connections decided for it in this turn of the event loop, sent together at its end
        self.outbox: list[tuple[Handover, socket.socket]] = []


class Supervisor(Front):
    def __init__(self, settings: Settings, workers: int) -> None:
        super().__init__(settings, open_store(settings.store), time.monotonic)
        self.pipeline = Pipeline(self.defences.checks())
        self.size = workers
        self.hold = GreetedHold(self._talked, self._left)  # greeted, waiting for a first byte
        self.lane = CleanLane(settings, workers, self.hold)
        self.first = self.lane.known_address  # admitted before a flood's queued connections
        self.workers: list[WorkerProcess | None] = [None] * (workers + (self.lane.index >= 0))
        self.connections: dict[int, tuple[Client, WorkerProcess]] = {}
        self.stopping = False
        self.admin: Any = None
        self._next_id = 0
        self._second = 0.0  # when the current one-second count of admissions started
        self._admitted = 0  # connections admitted in it
        self._outboxes: set[WorkerProcess] = set()  # workers with hand-overs to send
        self._settings_json = self._for_workers(settings)
        # Sessions run here: the same gateway a worker has, on this process's own defences and
        # store (their connect stage ran at admission, so it is left out).
        self.slots = LocalSlots(lambda n: self.hold.saw_leaving(n), lambda c: self.hold.vouch(c))
        self.local = Gateway(
            settings,
            store=self.store,
            defences=lambda *_: self.defences,
            extra_checks=[self.slots],
        )
        # its own sessions (LOCAL_SESSIONS, unless every worker is busy or down) keep their
        # messages in memory up to server.spool_memory each, past that on disk; the workers
        # share the rest
        self.local.spool_budget.limit = local_spool_share(settings)
        self.stats.gauge("workers.ready", lambda: len(self._live(False)))
        self.stats.gauge("sessions.handed", lambda: len(self.connections))
        self.stats.gauge("sessions.local", lambda: self.slots.taken)
        self.stats.gauge("lane.ready", lambda: len(self._live(True)))  # 0 without a lane
        self.stats.gauge("connections.held", self.hold.__len__)
        self.stats.gauge("connections.hold_engaged", lambda: int(self.hold.engaged()))

    # ---------------------------------------------------------------- start
    async def start(self) -> list[tuple[str, int]]:
        self.loop = self.hold.loop = asyncio.get_running_loop()
        self.fit_connection_cap(raise_fd_limit(), self.settings.relay.pool_size)
        await self.pipeline.start()
        await self.local.start()
        for index in range(len(self.workers)):
            self._spawn(index)
        deadline = self.loop.time() + START_TIMEOUT
        while len(self._live()) < len(self.workers):
            failed = [w.failure for w in self.workers if w is not None and w.failure]
            if failed or self.loop.time() > deadline:
                await self.stop(0)
                raise OSError(failed[0] if failed else f"workers not up in {START_TIMEOUT:g} s")
            await asyncio.sleep(0.02)
        try:
            bound = await self.listen()
            sides = await self.start_sides()  # before the admin: its /healthz means all is up
            if self.settings.admin.listen:
                await self.start_admin(self.snapshot)
        except OSError:
            await self.stop(0)  # no worker outlives a supervisor that could not start
            raise
        self.start_ticker()
        logs.event(
            "listening",
            addresses=[f"{h}:{p}" for h, p in bound],
            downstream=self.settings.relay.downstream or f"maildir:{self.settings.maildir.path}",
            domains=self.settings.domains.local,
            max_connections=self.defences.admission.max_connections,
            workers=self.size,
            clean_lane=self.lane.index >= 0,
            admin=self.settings.admin.listen or None,
            side=sides or None,
        )
        return bound

    def _for_workers(self, settings: Settings) -> bytes:
        """The settings a worker gets, as JSON: with how many they are (server.workers 0 is
        resolved here; the lane's counted), so each takes its share of
        server.spool_memory_total."""
        server = settings.server.model_copy(update={"workers": len(self.workers)})
        return settings.model_copy(update={"server": server}).model_dump_json().encode()

    # --------------------------------------------------------------- reload
    async def reload(self, settings: Settings) -> list[str]:
        """Reload here (the defences, the sessions run here), then in every worker: each
        builds its new state from the same validated settings. Returns the workers that
        could not (they keep their old state), one line each."""
        data = self._for_workers(settings)
        if len(data) > MAX_MESSAGE - 1024:
            raise ValueError(f"configuration too large to pass to the workers ({len(data)} B)")
        await self.local.reload(settings)
        self.lane.reload(settings)
        failed = await self.reload_sides(settings)
        self.settings = settings
        self._settings_json = data  # a worker started from now on gets these
        live = self._live()
        answers = await asyncio.gather(
            *(w.link.request("reload", data, timeout=RELOAD_TIMEOUT) for w in live),
            return_exceptions=True,
        )
        return failed + [
            f"worker {w.pid}: {answer}"
            for w, answer in zip(live, answers, strict=True)
            if isinstance(answer, BaseException)
        ]

    def _spawn(self, index: int) -> None:
        ours, theirs = socket_pair()
        # SIGHUP blocked across the exec: the worker starts with it pending, not fatal, and
        # unblocks it once it ignores it (a group SIGHUP during its start-up never kills it)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailmoat.server.worker", str(theirs.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=[theirs.fileno()],
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            theirs.close()
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(self._settings_json)
        worker = WorkerProcess(index, proc, index == self.lane.index)
        worker.settings = self._settings_json
        worker.link = Link(
            ours,
            partial(self._message, worker),
            partial(self._serve, worker),
            partial(self._lost, worker),
        )
        self.workers[index] = worker

    def _live(self, lane: bool | None = None) -> list[WorkerProcess]:
        """The workers up; `lane` True: the lane's only, False: the others only."""
        return [
            w
            for w in self.workers
            if w is not None and w.ready and not w.link.closed and lane in (None, w.lane)
        ]

    # ------------------------------------------------------------- hand-over
    def admitted(self, sock: Any, client: Client, verdict: Verdict, greeted: bool) -> None:
        """Run the session here while few run here and few arrive, else hand it to a worker."""
        now = self.loop.time()
        if now - self._second >= 1.0:
            self._second, self._admitted = now, 0
        self._admitted += 1
        known = self.lane.known(client)  # delivered lately, or ours: not a flood client
        lane = self.lane.pick(self._live(True)) if known else None  # never runs a flood's
        light = self.slots.taken < LOCAL_SESSIONS and self._admitted <= LOCAL_RATE
        if lane is None and (light or not self._live(False)):
            self._run_here(sock, client, verdict, greeted)
            return
        holding = not known and (self.stress.active or self.hold.engaged())  # a flood seen
        if greeted and holding and self.hold.hold(sock, client, self._hold_time()):
            return  # handed over once its client talks; closed here if it leaves
        if known:  # its worker starts it before the others that wait (gateway.adopt)
            client.tag(VOUCHED)
        self._to_worker(sock, client, verdict, greeted, lane)
        if known:  # its hand-over goes now, not after the rest of this turn's accepts
            self._hand_over()

    def _hold_time(self) -> float:
        """How long a greeted connection is held: never past a greeting timeout that its
        session may apply (the session counts the time held, so none is late)."""
        return min(HOLD_TIME, self.settings.timeouts.greeting, self.settings.stress.greeting)

    def _talked(self, sock: socket.socket, client: Client) -> None:
        """A held client sent its first byte, or stayed silent to the end of its hold."""
        if self._live(False):
            self._to_worker(sock, client, None, True)
        else:
            self._run_here(sock, client, None, True)

    def _left(self, sock: socket.socket, client: Client) -> None:
        """A held client closed the connection after the 220: no session was ever needed."""
        sock.close()
        self.stats.incr("connections.left_after_greeting")
        self.pipeline.disconnect(client)  # its admission slots back
        if logs.enabled(logging.DEBUG):
            logs.event("left_after_greeting", logging.DEBUG, client=client.address)

    def _to_worker(
        self,
        sock: Any,
        client: Client,
        verdict: Verdict,
        greeted: bool,
        worker: WorkerProcess | None = None,
    ) -> None:
        """Hand the connection to `worker` (default: the ordinary workers' `_choice`)."""
        self._next_id += 1
        client.conn_id = cid = self._next_id
        worker = worker or self._choice()[0]
        if not self._outboxes:
            self.loop.call_soon(self._hand_over)
        self._outboxes.add(worker)
        handover = Handover(
            cid,
            client.address,
            client.port,
            client.trusted,
            client.tags,
            verdict,
            greeted,
            client.waited,
        )
        worker.outbox.append((handover, sock))
        self._assign(cid, client, worker)

    def _assign(self, cid: int, client: Client, worker: WorkerProcess) -> None:
        """Count a connection as the worker's from the decision on (the next decision, in
        the same turn, sees it), though it leaves at the end of the turn."""
        self.connections[cid] = (client, worker)
        worker.sessions += 1
        worker.last = cid

    def _hand_over(self) -> None:
        """Send each worker the connections decided for it in the last turn: one packet and
        one system call for up to MAX_FDS of them. A worker whose link is full or gone gets
        none; they go to the others, one at a time, or are run here."""
        outboxes, self._outboxes = self._outboxes, set()
        for worker in outboxes:
            while worker.outbox:
                part = worker.outbox[:MAX_FDS]
                if not worker.link.send_fds([(m, s.fileno()) for m, s in part]):
                    break
                del worker.outbox[: len(part)]
                self.stats.incr("sessions.handed_over", len(part))
                for _, sock in part:
                    sock.close()  # the worker has its own descriptor now
            self._reroute(worker)

    def _reroute(self, worker: WorkerProcess) -> None:
        """The hand-overs `worker` did not take (its link is full or gone) go elsewhere."""
        left, worker.outbox = worker.outbox, []
        for handover, sock in left:
            self._elsewhere(handover, sock, worker)

    def _elsewhere(self, handover: Handover, sock: socket.socket, refused: WorkerProcess) -> None:
        """A hand-over the chosen worker could not take: another worker, or this process."""
        cid = handover.conn_id
        client, _ = self.connections.pop(cid)
        refused.sessions -= 1
        for worker in self._choice():
            if worker is not refused and worker.link.send_fds([(handover, sock.fileno())]):
                sock.close()
                self.stats.incr("sessions.handed_over")
                self._assign(cid, client, worker)
                return
        client.conn_id = 0
        self._run_here(sock, client, handover.verdict, handover.greeted)  # every link is full

    def _run_here(self, sock: Any, client: Client, verdict: Verdict, greeted: bool) -> None:
        self.slots.take(client)
        self.stats.incr("sessions.run_here")
        self.local.adopt(sock, client, verdict, greeted)

    def _choice(self) -> list[WorkerProcess]:
        """The workers in the order to try: the one that had the last connection while it
        holds at most `SPREAD` more sessions than the least busy (under a light load one
        worker stays warm, its code in the caches and its CPU awake, and answers sooner than
        one that slept), then the others, fewest sessions first. Never the lane's."""
        live = sorted(self._live(False), key=lambda w: (w.sessions, -w.last))
        if len(live) > 1:
            recent = max(live, key=lambda w: w.last)
            if recent.sessions <= live[0].sessions + SPREAD and recent is not live[0]:
                live.remove(recent)
                live.insert(0, recent)
        return live

    def _message(self, worker: WorkerProcess, message: Message, sock: Any) -> None:
        if sock is not None:
            sock.close()  # workers send no descriptors
        if isinstance(message, Closed):
            if message.silent:
                self.hold.saw_leaving(message.silent)
            for cid in message.delivered:
                entry = self.connections.get(cid)
                if entry is not None and entry[1] is worker:
                    self.hold.vouch(entry[0].address)
            for cid in message.conn_ids:
                if self.connections.get(cid, (None, None))[1] is worker:  # its own only
                    self._release(cid)
        elif isinstance(message, Strike):
            if message.reason in STRIKE_REASONS:
                self.defences.bans.strike(message.address, message.reason)
        elif isinstance(message, Failed):
            worker.failure = message.error[:500]
            logs.event("worker_failed", logging.ERROR, pid=worker.pid, error=worker.failure)
        elif isinstance(message, Ready):
            if worker.settings is not self._settings_json:  # a reload came while it started
                self.spawn(self._catch_up(worker))
                return
            worker.ready = True
            if self.stress.active:
                worker.link.send(StressMode(True))

    async def _catch_up(self, worker: WorkerProcess) -> None:
        """A worker started with settings a reload has since replaced gets the new ones before
        it is given a connection (else it would serve the old ones with no word said)."""
        data = worker.settings = self._settings_json  # tried once: a failure is said, not retried
        try:
            await worker.link.request("reload", data, timeout=RELOAD_TIMEOUT)
        except Exception as err:  # it keeps its old state: said, as a reload says it
            logs.event("reload", logging.ERROR, status="failed", worker=worker.pid, error=str(err))
        if not worker.link.closed:
            self._message(worker, Ready(worker.pid), None)

    def _serve(self, worker: WorkerProcess, name: str, args: tuple[Any, ...]) -> Any:
        if name == "store" and args and args[0] in OPERATIONS:
            self.stats.incr("store.worker_calls")  # each one a round trip from a worker
            return getattr(self.store, args[0])(*args[1:])
        raise ValueError(f"unknown request {name!r}")

    def _release(self, cid: int) -> None:
        entry = self.connections.pop(cid, None)
        if entry is not None:
            client, worker = entry
            worker.sessions -= 1
            self.pipeline.disconnect(client)

    def _lost(self, worker: WorkerProcess) -> None:
        """A worker's link closed: it stopped or died. Its sessions are gone with it."""
        worker.ready = False
        self._reroute(worker)  # decided for it, not sent yet: they go elsewhere
        for cid in [c for c, (_, w) in self.connections.items() if w is worker]:
            self._release(cid)
        if self.stopping:
            return
        logs.event(
            "worker_lost",
            logging.WARNING,
            pid=worker.pid,
            exit_code=worker.proc.poll(),
            restart_in=RESPAWN_DELAY,
        )
        self.stats.incr("workers.restarted")
        self.loop.call_later(RESPAWN_DELAY, self._replace, worker)

    def _replace(self, worker: WorkerProcess) -> None:
        if worker.proc.poll() is None:  # its link is gone but it lives on: end it, and look
            worker.proc.kill()  # again shortly (no blocking wait in the event loop)
            self.loop.call_later(0.1, self._replace, worker)
            return
        if not self.stopping and self.workers[worker.index] is worker:
            self._spawn(worker.index)

    def _stress_changed(self, on: bool) -> None:
        for worker in self._live():
            worker.link.send(StressMode(on))

    # ----------------------------------------------------------------- stats
    async def snapshot(self) -> dict[str, Any]:
        """The supervisor's counters with every worker's added in."""
        doc = self.stats.snapshot()
        here = self.local.stats.snapshot()
        for name, value in here["counters"].items():
            doc["counters"][name] = doc["counters"].get(name, 0) + value
        merge_histograms(doc["histograms"], here["histograms"])
        for name, value in here["gauges"].items():  # its sessions, delivery and loop
            if name in ("sessions", "loop.lag_max_ms", "spool.memory") or name.startswith(
                "downstream."
            ):
                doc["gauges"][name] = value
        doc["loop_lag_max_ms"] = here["gauges"]["loop.lag_max_ms"]  # this process's own
        merge_console(doc, here)
        live = self._live()
        answers = await asyncio.gather(
            *(w.link.request("snapshot", timeout=SNAPSHOT_TIMEOUT) for w in live),
            return_exceptions=True,
        )
        doc["workers"] = []
        for worker, part in zip(live, answers, strict=True):
            mine = add_worker(doc, worker.pid, part)
            if worker.lane:
                doc["lane"] = mine  # the clean lane's worker, beside the others
            else:
                doc["workers"].append(mine)
        doc["counters"] = dict(sorted(doc["counters"].items()))
        doc["gauges"] = dict(sorted(doc["gauges"].items()))
        return doc

    # ------------------------------------------------------------------ stop
    async def stop(self, grace: float = default_of(ServerSettings, "drain_time")) -> None:
        """Stop accepting; the workers finish their deliveries (up to `grace` s) and exit."""
        self.stopping = True
        self.stop_listening()
        await self.close_sides()
        for client in self.hold.close_all(R_SHUTDOWN.to_bytes()):  # they said nothing yet
            self.stats.incr("closed.shutdown")
            self.pipeline.disconnect(client)
        self._hand_over()  # what was decided before the stop goes out before the stop
        workers = [w for w in self.workers if w is not None]
        for worker in workers:
            worker.link.send(Stop(grace))
        deadline = time.monotonic() + grace + 5.0
        while any(w.proc.poll() is None for w in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(1.0)
            worker.link.close()
        await self.local.stop(grace)  # its sessions went on meanwhile; the rest get a 421
        if self.admin is not None:
            await self.admin.stop()
        await self.pipeline.close()
        await self.defences.bans.close()
        await self.cancel_background()
        await self.store.close()
