"""The macros an MTA sends before each milter step, kept by stage and bounded.

Each packet replaces its stage's set (as in Sendmail), so a recipient's macros never linger on
to the next one; the sets together hold at most `MILTER_MAX_MACROS` names and
`MILTER_MAX_MACRO_OCTETS` octets of values, past which the connection is closed.
"""

from __future__ import annotations

from mailmoat.limits import MILTER_MAX_MACRO_OCTETS, MILTER_MAX_MACROS
from mailmoat.milter.codec import Macros, MilterError


class MacroSets:
    __slots__ = ("_count", "_octets", "_sets", "_sizes")

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, str]] = {}
        """By the stage they came before, the latest set last."""
        self._sizes: dict[str, tuple[int, int]] = {}
        """(count, octets of the values) of each stage's set; their sums kept as they change."""
        self._count = 0
        self._octets = 0

    def update(self, ev: Macros) -> None:
        """Replace `ev.stage`'s set; MilterError past the bounds."""
        stage, values = ev.stage, ev.values
        octets = 0
        for _, value in values:
            octets += len(value)
        old = self._sizes.pop(stage, (0, 0))
        self._sets.pop(stage, None)  # the latest set last
        self._sets[stage] = dict(values)
        self._sizes[stage] = (len(values), octets)
        count = self._count = self._count - old[0] + len(values)
        self._octets += octets - old[1]
        if len(self._sets) > MILTER_MAX_MACROS or count > MILTER_MAX_MACROS:
            raise MilterError("too_many_macros", str(count))
        if self._octets > MILTER_MAX_MACRO_OCTETS:
            raise MilterError("macros_too_big")

    def get(self, name: str, stage: str = "") -> str:
        """A macro's value, from `stage`'s set, or else from the latest set that has it."""
        if stage:
            return self._sets.get(stage, {}).get(name, "")
        for values in reversed(self._sets.values()):
            if name in values:
                return values[name]
        return ""
