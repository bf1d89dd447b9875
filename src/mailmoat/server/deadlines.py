"""The session's deadlines: the slow-client defence.

Each wait for the client has a deadline that trickled bytes do not move: from the greeting to
the first complete command line (`timeouts.greeting`), from each reply to the next complete
line (`timeouts.command`), and in DATA both a silence limit (`timeouts.data`) and a minimum
average rate (`timeouts.min_data_rate` once `timeouts.data` has passed). `timeouts.session`
caps the whole session. In stress mode the `stress.*` values replace the first three for
clients that are not trusted. While mailmoat itself works (a hook or a delivery runs, a tarpit
delay holds the reply), the clock waits. One timer per session watches the earliest deadline
and re-arms itself only when it fires (or when a new wait ends sooner). Closes for missed
deadlines go through the host's close queue, so thousands of idle clients that time out
together are closed at a bounded pace.
"""

from __future__ import annotations

import inspect

from mailmoat.server.session_base import SessionBase
from mailmoat.smtp.connection import Phase
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import reply

R_TIMEOUT = reply(421, "4.4.2", "Error: timeout exceeded, closing connection")
R_SESSION_TIME = reply(421, "4.4.2", "Error: session time limit exceeded, closing connection")
R_SLOW_DATA = reply(421, "4.4.2", "Error: message data too slow, closing connection")


class Deadlines(SessionBase):
    """The session's timer (a part of `SmtpSession`)."""

    __slots__ = ()

    def _flush(self) -> None:
        """Write the queued replies; a new wait for the client starts with them."""
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
            self._waiting_since = self.host.loop.time()
            # A new wait may end sooner than the timer would fire (greeting -> command, DATA).
            if self._timer is not None and self._deadline()[0] < self._timer_at:
                self._timer.cancel()
                self._arm_timer()

    def _deadline(self) -> tuple[float, str]:
        """When the current wait for the client ends, and what closes it then."""
        conn = self.conn
        t = self.state.settings.timeouts
        stressed = self.host.stress.active and not self.client.trusted
        st = self.host.stress.settings
        session_end = self._started + t.session
        if conn.phase is Phase.DATA:
            silence = st.data if stressed else t.data
            end, why = self._last_byte + silence, "timeout"
            if t.min_data_rate:
                slow = self._waiting_since + silence + self._data_bytes / t.min_data_rate
                if slow < end:
                    end, why = slow, "min_data_rate"
        elif conn.helo is None and self.transactions == 0:
            end, why = self._waiting_since + (st.greeting if stressed else t.greeting), "timeout"
        else:
            end, why = self._waiting_since + (st.command if stressed else t.command), "timeout"
        if session_end <= end:
            return session_end, "session_time"
        return end, why

    def _arm_timer(self) -> None:
        self._timer_at = when = self._deadline()[0]
        self._timer = self.host.loop.call_at(when, self._on_timer)

    def rearm(self, not_before: float) -> None:
        """The deadlines got shorter (stress mode): look again at the new deadline, but not
        before `not_before` (the host spreads the closes)."""
        if self._timer is None or self.transport is None:
            return
        when = max(self._deadline()[0], not_before)
        if when < self._timer_at:
            self._timer.cancel()
            self._timer_at = when
            self._timer = self.host.loop.call_at(when, self._on_timer)

    def _rearm_timer(self) -> None:
        """We finished working: the client's clock runs again from now. A timer that fires
        no later than the new deadline stays (it re-arms itself when it fires early)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._timer is not None:
            if self._timer_at <= self._deadline()[0]:
                return
            self._timer.cancel()
        self._arm_timer()

    def _on_timer(self) -> None:
        """Close a client that missed its deadline. While we are the ones working (a hook or a
        delivery runs, or a delay holds the reply), the clock waits."""
        self._timer = None
        if self.transport is None:
            return
        loop = self.host.loop
        if self._task is not None or self._hold is not None:
            # Busy: the end of the work re-arms; meanwhile only the session cap is watched.
            session_end = self._started + self.state.settings.timeouts.session
            self._timer_at = max(session_end, loop.time() + 1.0)
            self._timer = loop.call_at(self._timer_at, self._on_timer)
            return
        now = loop.time()
        end, why = self._deadline()
        if now < end:
            self._close_due = False
            self._timer_at = end
            self._timer = loop.call_at(end, self._on_timer)
            return
        if not self._close_due:
            slot = self.host.close_slot(now)
            if slot > now:
                # Thousands of clients that connected together miss their deadlines together:
                # each waits for its place in the host's close queue.
                self._close_due = True
                self._timer_at = slot
                self._timer = loop.call_at(slot, self._on_timer)
                return
        if not self.host.may_close():  # this turn closed its share: the next one
            self._close_due = True
            self._timer_at = now
            self._timer = loop.call_at(now, self._on_timer)
            return
        answer = {"timeout": R_TIMEOUT, "min_data_rate": R_SLOW_DATA}.get(why, R_SESSION_TIME)
        self._write(answer.to_bytes())
        self._close(why)
        verdict = self.state.pipeline.run("rejected", self.client, Rejected(why, answer))
        if inspect.isawaitable(verdict):
            self.host.spawn(verdict)
