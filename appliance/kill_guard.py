"""The kill switch as the order gateway reads it: once a batch, and at a microsecond's cost
before every send.

Reading the switch is a SQLite read on the bus (tens of microseconds); a bar's batch at 150
symbols sends up to 150 orders. So the guard reads the switch itself when a batch begins
(:meth:`KillGuard.read`) together with the bus's switch token (:meth:`appliance.bus.Bus.
switch_token`: bytes of a file this process has mapped, no system call), and before each send
compares the token only (:meth:`KillGuard.on`): a switch set through the bus by any process
(``methtrader kill``, the TUI, the risk service) or a kill file written by ``kill`` since
changes the token, and the switch is read again before that order leaves.

The trading engine reads the switch once a bar's orders have left, for the next bar's batch
(:meth:`KillGuard.read_ahead`, off the path from the next bar to its orders); that batch then
begins on the reading unless the token moved or a kill file appeared since
(:meth:`KillGuard.begin`), and a reading serves one batch only.

It fails closed: a token that cannot be read means a read of the switch before every order
(which itself reads a missing or damaged switch as ON), and once ON within a batch it stays ON
for the rest of it (a resume waits for the next batch). A switch record written behind the
bus's back (no stamp; the ``switches`` service audits it and sets the switch ON) is seen at
the next batch that does not begin on a reading taken before it: at worst the bar after next.
"""

from __future__ import annotations

from typing import Protocol

from appliance.bus import MAINTENANCE_MODE


class SwitchSource(Protocol):
    def switch(self, name: str) -> bool: ...

    def switch_token(self) -> object | None: ...

    def check_stamp(self) -> None: ...

    @property
    def kill_file_present(self) -> bool: ...


class KillGuard:
    def __init__(self, bus: SwitchSource) -> None:
        self.bus = bus
        self.value = True  # not read yet: ON
        self.token: object | None = None
        self.reads = 0  # reads of the switch itself (the token's checks are not counted)
        self.ahead = False  # a reading taken ahead of the next batch (:meth:`read_ahead`)

    def read(self) -> bool:
        """Read the switch itself (a batch begins); True when ON. The token is taken first, so
        a change after it is seen by the next :meth:`on`."""
        self.bus.check_stamp()
        self.token = self.bus.switch_token()
        self.value = self.bus.switch(MAINTENANCE_MODE)
        self.reads += 1
        return self.value

    def read_ahead(self) -> None:
        """Read the switch now for the next batch to begin on (between two bars)."""
        self.read()
        self.ahead = True

    def begin(self) -> bool:
        """The switch for a batch that begins: the reading taken ahead of it when it is OFF,
        the token has not moved since and there is no kill file (one ``stat``: ``kill``
        stamps the token too, but the kill file is the path that works when the bus does
        not), else a read of the switch itself."""
        ahead, self.ahead = self.ahead, False
        self.bus.check_stamp()
        if ahead and not self.value and not self.bus.kill_file_present:
            token = self.bus.switch_token()
            if token is not None and token == self.token:
                return False
        return self.read()

    def on(self) -> bool:
        """Whether the switch is ON now: the last read unless the token moved since (or cannot
        be read), in which case the switch is read again."""
        if self.value:
            return True
        token = self.bus.switch_token()
        if token is None or token != self.token:
            return self.read()
        return False
