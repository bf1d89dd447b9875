"""The state table (smtp/state.py) on its own: where each command may come and where it leads."""

from __future__ import annotations

import pytest

from mailmoat.smtp.events import DataStart, Helo, MailFrom, MessageEnd, Noop, Quit, RcptTo, Rset
from mailmoat.smtp.state import (
    PHASE,
    SEQUENCE,
    TRANSITIONS,
    Phase,
    State,
    StateError,
    Trigger,
    advance,
)


def test_a_transaction_goes_round() -> None:
    state = advance(State.GREETING, Trigger.GREETED)
    for trigger, expected in [
        (Helo, State.READY),
        (MailFrom, State.MAIL),
        (RcptTo, State.RCPT),
        (RcptTo, State.RCPT),
        (DataStart, State.DATA),
        (Trigger.DATA_END, State.MESSAGE_END),
        (MessageEnd, State.READY),
    ]:
        state = advance(state, trigger)
        assert state is expected, trigger


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (State.READY, RcptTo),
        (State.MAIL, DataStart),
        (State.NO_HELO, MailFrom),
        (State.READY, Trigger.TLS_STARTED),
        (State.DATA, Helo),
        (State.GREETING, Helo),
    ],
)
def test_a_move_the_table_does_not_allow_raises(state: State, trigger: type | Trigger) -> None:
    with pytest.raises(StateError):
        advance(state, trigger)


@pytest.mark.parametrize("trigger", [Noop, Quit])
def test_commands_that_move_nothing_leave_the_state(trigger: type) -> None:
    for state in (State.NO_HELO, State.READY, State.MAIL, State.RCPT):
        assert advance(state, trigger) is state


def test_every_state_can_close_and_rset_ends_a_transaction() -> None:
    assert {advance(state, Trigger.CLOSED) for state in State} == {State.CLOSED}
    assert advance(State.RCPT, Rset) is State.READY
    assert advance(State.NO_HELO, Rset) is State.NO_HELO


def test_the_tables_cover_every_state() -> None:
    assert set(TRANSITIONS) == set(State) == set(PHASE)
    assert set(SEQUENCE) == {state for state, phase in PHASE.items() if phase is Phase.COMMAND} - {
        State.MESSAGE_END
    }
