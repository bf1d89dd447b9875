"""What a reload takes from the new file: everything but the settings only a restart can
change, which keep their old value and are named (server/reload.py)."""

from __future__ import annotations

from mailmoat import config
from mailmoat.server.reload import RESTART, changed_keys, flat, keep_restart_only, needs_restart


def _settings(**overrides: object) -> config.Settings:
    base: dict[str, object] = {"server.listen": ["127.0.0.1:2525"], "dns.checks": False}
    return config.load(None, base | overrides)


def test_changed_keys_name_every_difference_and_only_those() -> None:
    old = _settings()
    new = _settings(
        **{"smtp.max_message_size": 20_000, "admission.deny_networks": ["192.0.2.0/24"]}
    )
    assert changed_keys(old, new) == ["smtp.max_message_size", "admission.deny_networks"]
    assert changed_keys(old, _settings()) == []


def test_restart_only_settings_keep_their_old_value() -> None:
    old = _settings(**{"server.hostname": "mx.old.test", "store.max_keys": 5000})
    new = _settings(
        **{
            "server.listen": ["127.0.0.1:2626"],
            "server.hostname": "mx.new.test",
            "store.max_keys": 6000,
            "smtp.max_message_size": 20_000,
        }
    )
    changed = changed_keys(old, new)
    restart = [key for key in changed if needs_restart(key)]
    assert restart == ["server.listen", "server.hostname", "store.max_keys"]
    applied = keep_restart_only(old, new, restart)
    assert applied.server.listen == ["127.0.0.1:2525"]
    assert applied.server.hostname == "mx.old.test"
    assert applied.store.max_keys == 5000
    assert applied.smtp.max_message_size == 20_000  # the rest is applied
    assert changed_keys(old, applied) == ["smtp.max_message_size"]


def test_every_restart_only_name_is_a_setting_or_a_section() -> None:
    keys = set(flat(_settings()))
    sections = {key.split(".", 1)[0] for key in keys}
    for name in RESTART:
        assert name in keys or name in sections, name
