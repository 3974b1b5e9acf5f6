"""A private network namespace for a benchmark that needs a real interface.

Janus 1.1.2 gathers no ICE candidate on loopback, so a suite that runs it
re-executes itself under ``unshare --net --map-root-user``: a new network
namespace (and a user namespace, so no privilege is needed) in which the suite
creates a veth pair with *both* ends inside and the addresses ``PEER_A`` and
``PEER_B``. Nothing outside the namespace is reachable from it, and it vanishes
when the last process in it exits.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.procs import BenchError

PEER_A = "10.231.0.1"
"""The server's address (veth end ``parleyns0``)."""
PEER_B = "10.231.0.2"
"""The other end (``parleyns1``); clients may gather candidates on both."""
IFACE = "parleyns0"
_MARK = Path("/proc/self/ns/net")


def unshare_argv(argv: list[str]) -> list[str]:
    """``argv`` run in a new network (and user) namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise BenchError("unshare (util-linux) is needed to make a private network namespace")
    return [unshare, "--net", "--map-root-user", *argv]


def available() -> bool:
    """Whether this user may create a network namespace (``unshare`` and user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(unshare_argv(["true"]), capture_output=True, check=False)
    return done.returncode == 0


def set_up() -> None:
    """Inside a fresh namespace: loopback up, a veth pair with both ends here, addressed."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    commands = [
        [ip, "link", "set", "lo", "up"],
        [ip, "link", "add", IFACE, "type", "veth", "peer", "name", "parleyns1"],
        [ip, "addr", "add", f"{PEER_A}/24", "dev", IFACE],
        [ip, "addr", "add", f"{PEER_B}/24", "dev", "parleyns1"],
        [ip, "link", "set", IFACE, "up"],
        [ip, "link", "set", "parleyns1", "up"],
    ]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command)}: {done.stderr.strip()}")


def interfaces() -> list[str]:
    """Network interfaces of the current namespace (a fresh one has only ``lo``)."""
    return sorted(p.name for p in Path("/sys/class/net").iterdir())
