#!/usr/bin/env python3
"""Run a command as a process group of its own that holds the terminal, so a Ctrl-C reaches only it.

    foreground.py COMMAND [ARG...]

Why (scripts/run-local runs itself under it): in ``make run | tee run.log``, a Ctrl-C at the
terminal sends SIGINT to the whole foreground process group, make, tee and the script alike. tee
dies at once, so the log loses the clean-up lines and whatever still writes to the pipe meets a
closed one; and GNU make, once its child has returned, kills itself with that same SIGINT, so the
command ends with status 130 however cleanly the script stopped. Run under this helper, COMMAND is
the terminal's foreground group: Ctrl-C (and Ctrl-backslash) reach only it, make and tee see it
exit and end as it does (tee at the end of its input), and the terminal goes back to the group that
had it. A Ctrl-Z stops the caller's group too (the shell sees its job stop as usual); on ``fg`` the
command gets the terminal back and continues.

Without a controlling terminal, or when the caller is not the terminal's foreground group (it runs
in the background), COMMAND is simply executed in place: there is no terminal Ctrl-C to route.
SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to this helper itself (say, to make's process group) are
passed on to COMMAND's group. Exit status: COMMAND's, 128 + N if signal N ended it. Standard
library only.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _controlling_terminal() -> int | None:
    """A descriptor of the controlling terminal if this process's group is its foreground group."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:  # no controlling terminal (CI, nohup, a test harness)
        return None
    try:
        if os.tcgetpgrp(tty) == os.getpgrp():
            return tty
    except OSError:
        pass
    os.close(tty)
    return None


def _give_terminal(tty: int, pgrp: int) -> None:
    # A member of a background group must ignore SIGTTOU to hand the terminal over (tcsetpgrp(3)).
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty, pgrp)
    except OSError:  # the group is gone already: nothing to hand over to
        pass
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _killpg(pgrp: int, sig: int) -> None:
    try:
        os.killpg(pgrp, sig)
    except ProcessLookupError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command or command[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2 if not command else 0
    tty = _controlling_terminal()
    if tty is None:
        os.execvp(command[0], command)
    own = os.getpgrp()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the command: a group of its own, started once the terminal is that group's
        os.close(go_write)
        os.setpgid(0, 0)
        os.read(go_read, 1)
        os.close(go_read)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"foreground.py: cannot run {command[0]}: {exc}", file=sys.stderr)
        os._exit(127)
    os.close(go_read)
    try:
        os.setpgid(pid, pid)  # also here, so the group exists before tcsetpgrp whichever runs first
    except OSError:
        pass
    _give_terminal(tty, pid)
    os.write(go_write, b"go")
    os.close(go_write)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _killpg(pid, signum))
    try:
        while True:
            _, status = os.waitpid(pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                break
            # Ctrl-Z stopped the command: stop the caller's group (make, tee and this helper) so
            # the shell sees its job stop; when continued, give the command the terminal again if
            # the job came back to the foreground (fg), then continue the command.
            _give_terminal(tty, own)
            os.killpg(own, signal.SIGTSTP)
            if os.tcgetpgrp(tty) == own:
                _give_terminal(tty, pid)
            _killpg(pid, signal.SIGCONT)
    finally:
        _give_terminal(tty, own)
        os.close(tty)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
