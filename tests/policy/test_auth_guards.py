"""Authentication-Results promises that mutation testing (scripts/mutation over policy/auth.py)
found nothing holding: a reverse-DNS name that is not a plain token never reaches our own
field (it could carry forged results into it); the SPF HELO result is reported only for the
HELO identity; an authserv-id ending in a lone backslash is read, not a crash; forged fields
apart are cut apart (never the field between them); a message with as many
Authentication-Results fields as can be tracked passes with the forged ones removed, one more
is refused; and a header the message's long DKIM domain made is not cached."""

from __future__ import annotations

import inspect

from mailmoat.config import AuthSettings
from mailmoat.limits import HEADER_MAX_KEPT
from mailmoat.message import Envelope, Message, Spool
from mailmoat.policy.auth import (
    R_TOO_MANY,
    ForgedResultsCheck,
    _render,
    forged_id,
    results_header,
)
from mailmoat.policy.base import Client
from mailmoat.policy.results import (
    DKIM,
    DMARC,
    IPREV,
    SPF,
    DkimResult,
    DmarcResult,
    Iprev,
    SpfResult,
    SpfResults,
)
from mailmoat.policy.score import SessionState

OURS = "mx.mailmoat.test"


def _message(head: bytes = b"", sender: str = "a@sender.test", memory: int = 65536) -> Message:
    spool = Spool(memory)  # 0: the content goes to a file at once
    spool.write(head + b"Subject: s\r\n\r\nbody\r\n")
    return Message(Envelope(sender, ["alice@example.test"]), spool, "Q1")


def _header(st: SessionState, sender: str = "a@sender.test") -> bytes:
    return results_header(OURS, st, _message(sender=sender))


def test_a_reverse_name_that_is_not_a_token_stays_out_of_our_field() -> None:
    st = SessionState(Client("192.0.2.1", 1))
    st.set(IPREV, Iprev("pass", "mail.sender.test"))
    assert b"policy.iprev=192.0.2.1 (mail.sender.test)" in _header(st)
    st.set(IPREV, Iprev("pass", "x) ; dkim=pass header.d=bank.test"))
    header = _header(st)
    assert (
        header
        == b"Authentication-Results: mx.mailmoat.test;\r\n\tiprev=pass policy.iprev=192.0.2.1\r\n"
    )


def test_the_helo_result_is_reported_for_the_helo_identity_only() -> None:
    st = SessionState(Client("192.0.2.2", 1))
    mailfrom = SpfResult("mailfrom", "sender.test", "pass")
    st.set(SPF, SpfResults(mailfrom, None))  # no HELO check made
    header = _header(st)
    assert b"spf=pass smtp.mailfrom=sender.test" in header and b"smtp.helo" not in header
    # the null sender: the MAIL FROM result is the HELO identity's
    st.set(SPF, SpfResults(SpfResult("helo", "mail.sender.test", "fail"), None))
    header = _header(st, sender="")
    assert b"spf=fail smtp.helo=mail.sender.test" in header and b"smtp.mailfrom" not in header


def test_a_quoted_id_ending_in_a_backslash_is_read_as_ours() -> None:
    assert forged_id('"MX.MailMoat.Test\\', OURS)
    assert forged_id('"mx.mailmoat.test\\"; spf=pass', OURS)
    assert not forged_id('"other.example\\', OURS)


def test_as_many_results_fields_as_are_tracked_pass_one_more_is_refused() -> None:
    check = ForgedResultsCheck(AuthSettings(), OURS)
    forged = b"Authentication-Results: mx.mailmoat.test; dkim=pass header.d=bank.test\r\n"
    other = b"Authentication-Results: other.example; spf=pass\r\n"
    full = _message(forged + other * (HEADER_MAX_KEPT - 1))
    assert check.message(Client("192.0.2.3", 1), full) is None
    assert full.omit == [(0, len(forged))]
    over = _message(forged + other * HEADER_MAX_KEPT)
    assert check.message(Client("192.0.2.3", 1), over) == R_TOO_MANY


def test_forged_fields_apart_are_cut_apart_and_the_field_between_kept() -> None:
    check = ForgedResultsCheck(AuthSettings(), OURS)
    forged = b"Authentication-Results: mx.mailmoat.test; dkim=pass header.d=bank.test\r\n"
    kept = b"Authentication-Results: other.example; spf=pass\r\n"
    msg = _message(forged + kept + forged + forged)
    assert check.message(Client("192.0.2.4", 1), msg) is None
    a, b = len(forged), len(forged) + len(kept)
    assert msg.omit == [(0, a), (b, b + 2 * len(forged))]


def test_a_long_dkim_domain_without_a_selector_is_not_cached() -> None:
    st = SessionState(Client("192.0.2.5", 1))
    for domain, selector in (("d" * 600 + ".test", ""), ("e" * 400 + ".test", "s" * 300)):
        st.set(DKIM, [DkimResult("permerror", domain, selector, "")])
        size = _render.cache_info().currsize
        header = _header(st)
        assert header.startswith(b"Authentication-Results: mx.mailmoat.test;\r\n\tdkim=permerror")
        assert _render.cache_info().currsize == size


def test_a_quoted_pair_in_a_comment_before_our_id_hides_nothing() -> None:
    """`(\\;)` is a comment holding a quoted ";": the id after it is ours, although the
    text before the first ";" does not name it."""
    assert forged_id("(\\;) MX.MailMoat.Test; dkim=pass header.d=bank.test", OURS)
    assert forged_id("(a\\)) mx.mailmoat.test; spf=pass", OURS)
    assert forged_id("(a ;) MX.MailMoat.Test; dkim=pass", OURS)  # a comment with blanks
    assert forged_id("(a\\); x) MX.MailMoat.Test; dkim=pass", OURS)  # a quoted ")"


def test_a_signature_value_that_is_not_base64_is_not_reported() -> None:
    st = SessionState(Client("192.0.2.6", 1))
    st.set(DKIM, [DkimResult("fail", "sender.test", "sel", "ab.cd-ef")])
    header = _header(st)
    assert b"dkim=fail header.d=sender.test header.s=sel\r\n" in header
    assert b"header.b" not in header
    # base64 with "+", "/" or "=" is no token: reported quoted
    st.set(DKIM, [DkimResult("pass", "sender.test", "sel", "ab+/cd==")])
    assert b'header.s=sel header.b="ab+/cd=="\r\n' in _header(st)


def test_only_the_id_before_the_first_semicolon_makes_a_field_ours() -> None:
    assert not forged_id("a.example; spf=pass", OURS)  # sorts before ours: still not ours
    assert not forged_id("other.example; spf=pass smtp.helo=mx.mailmoat.test", OURS)
    # an encoded word (or junk a lenient parser reads past) naming our id is ours
    assert forged_id("=?utf-8?q?mx.mailmoat.test?=; dkim=pass", OURS)


def test_the_dmarc_comment_shows_the_policy_unless_there_is_none() -> None:
    st = SessionState(Client("192.0.2.7", 1))
    for result in ("fail", "pass"):
        st.set(DMARC, DmarcResult(result, "sender.test", "reject", "reject"))
        line = f"dmarc={result} (p=reject dis=reject) header.from=sender.test\r\n"
        assert line.encode() in _header(st)
    st.set(DMARC, DmarcResult("none", "sender.test"))
    assert b"dmarc=none header.from=sender.test\r\n" in _header(st)


def test_a_quoted_pair_inside_a_quoted_id_is_undone() -> None:
    """The comment holds a ";", so only the unquoted id can tell that the field is ours."""
    assert forged_id('(;) "MX.MailMoat.Tes\\t"; dkim=pass header.d=bank.test', OURS)
    assert forged_id('(;) "MX.MailMoat.Tes\\t', OURS)  # not even closed
    assert forged_id('(;) " MX.MailMoat.Test"; spf=pass', OURS)  # blanks inside the quotes


def test_an_empty_or_comment_only_value_is_read_as_no_id() -> None:
    for value in ("", "   ", "(only a comment)", "(\\", "(open comment"):
        assert not forged_id(value, OURS), value


def test_a_signatures_domain_or_selector_that_is_no_token_stays_out() -> None:
    """d= and s= are the message's own text: "; dmarc=pass" in them must not become a
    result in our field."""
    st = SessionState(Client("192.0.2.8", 1))
    st.set(DKIM, [DkimResult("fail", "bank.test; dmarc=pass", "s el", "")])
    assert _header(st) == b"Authentication-Results: mx.mailmoat.test;\r\n\tdkim=fail\r\n"


async def test_forged_fields_of_a_message_spooled_to_a_file_are_removed() -> None:
    """The header scan is not ready at once then: the check reads it, later."""
    check = ForgedResultsCheck(AuthSettings(), OURS)
    forged = b"Authentication-Results: mx.mailmoat.test; dkim=pass header.d=bank.test\r\n"
    msg = _message(forged, memory=0)
    try:
        assert msg.headers_now() is None
        verdict = check.message(Client("192.0.2.9", 1), msg)
        assert inspect.isawaitable(verdict) and await verdict is None
        assert msg.omit == [(0, len(forged))]
    finally:
        msg.spool.close()
