"""Validation of the denial-of-service settings: each mistake is named by its dotted key."""

from __future__ import annotations

import pytest

from mailmoat import config


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        ({"admission.deny_networks": ["10.0.0.0/33"]}, "admission.deny_networks", "not a network"),
        ({"admission.allow_networks": ["nonsense"]}, "admission.allow_networks", "not a network"),
        ({"admission.only_accept_from": True}, "admission", "allow_networks"),
        ({"admission.ipv4_prefix": 4}, "admission.ipv4_prefix", "greater than or equal"),
        ({"admission.max_per_ip": 0}, "admission.max_per_ip", "greater than or equal"),
        ({"stress.start_at": 0.2, "stress.stop_at": 0.3}, "stress", "stop_at"),
        ({"stress.start_at": 1.5}, "stress.start_at", "less than or equal"),
        ({"tarpit.max_delay": 60}, "tarpit.max_delay", "less than or equal"),
        ({"pregreet.wait": -1}, "pregreet.wait", "greater than or equal"),
        ({"admin.listen": "0.0.0.0:9025"}, "admin.listen", "loopback"),
        ({"admin.listen": "localhost"}, "admin.listen", "HOST:PORT"),
        ({"timeouts.session": 0}, "timeouts.session", "greater than"),
    ],
)
def test_bad_values_are_refused_with_their_key(
    overrides: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(None, overrides)
    (problem,) = err.value.problems
    assert problem[0] == key and words in problem[1]


def test_good_values_pass() -> None:
    s = config.load(
        None,
        {
            "admission.allow_networks": ["10.0.0.0/8", "2001:db8::/32"],
            "admission.only_accept_from": True,
            "admin.listen": "[::1]:9025",
            "stress.start_at": 1.0,
        },
    )
    assert s.admission.only_accept_from and s.admin.listen == "[::1]:9025"
    assert config.load(None, {"admin.listen": "/run/mailmoat/admin.sock"}).admin.listen
