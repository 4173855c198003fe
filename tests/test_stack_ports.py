"""``free_port``: the ports a stack reserves are never the ones the kernel hands out to others."""

import socket
from pathlib import Path

from tools.stack.processes import free_port


def test_free_ports_are_distinct_bindable_and_below_the_kernels_ephemeral_range() -> None:
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(100)]

    assert len(set(ports)) == len(ports)
    assert all(1024 < port < ephemeral_low for port in ports)
    # What the Temporal dev server's internal services do: ask the kernel for any port.
    taken_by_others = []
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            taken_by_others.append(sock.getsockname()[1])
    assert not set(taken_by_others) & set(ports)
    for port in ports[:10]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
