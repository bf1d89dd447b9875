"""A check declares its settings section beside its code (`mailmoat.config.sections`): the
section is then a table of the settings file like the others, validated, refused, printed by
`config defaults` and sent to workers, without an edit to the config package. Run in a child
process: a registered section stays for the life of the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import tomllib
    from pydantic import Field
    from mailmoat import config
    from mailmoat.config.base import Section
    from mailmoat.config.sections import own_section, section_of

    before = config.Settings()

    @own_section("sample")
    class SampleSettings(Section):
        tries: int = Field(default=3, ge=1, description="How many times.")

    s = config.build({"sample": {"tries": 5}})
    assert section_of(s, SampleSettings).tries == 5, s
    assert section_of(config.Settings(), SampleSettings).tries == 3
    assert section_of(before, SampleSettings).tries == 3  # built before it registered
    for bad, problem in [
        ({"sample": {"tries": 0}}, ("sample.tries", "Input should be greater than or equal to 1")),
        ({"sample": {"trys": 2}}, ("sample.trys", "Extra inputs are not permitted")),
        ({"sampel": {}}, ("sampel", "Extra inputs are not permitted")),
    ]:
        try:
            config.build(bad)
        except config.ConfigError as err:
            assert err.problems == [problem], err.problems
        else:
            raise AssertionError(bad)
    listing = config.defaults_toml()
    assert "[sample]\\ntries = 3  # How many times.\\n" in listing, listing
    assert config.build(tomllib.loads(listing)) == config.build({})
    # what the supervisor sends a worker, read back
    assert config.Settings.model_validate_json(s.model_dump_json()) == s
    for name in ("dns", "sample", "not a name"):
        try:
            own_section(name)(type("Other", (Section,), {}))
        except ValueError as err:
            assert "exists already or is not a name" in str(err)
        else:
            raise AssertionError(name)
    print("ok")
    """
)


def test_a_section_declared_beside_a_check_is_a_table_like_any_other() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert run.stdout == "ok\n", run.stderr
