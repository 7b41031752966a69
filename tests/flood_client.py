"""Anonymous resolution flooders, run as a separate process by the fairness
attack test (tests/test_attacks_fairness.py), so that their own work does
not run on the registrar's reactor.

    python -m tests.flood_client PORT CA_FILE SECONDS BATCH ADDRESS...

Per ADDRESS, a thread with a TLS connection bound to that loopback address:
for SECONDS it writes BATCH handle resolutions at a time, as fast as the
registrar takes them (TCP's flow control is the only brake), and reads and
discards the answers.  The process prints ``ready`` once
every connection is up and, at the end, one JSON line with the bytes of
answers each connection received.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import sys
import threading
import time

from rserpool.wire import AsapHandleResolution
from rserpool.wire.codes import PPID_ASAP
from rserpool.wire.tcpmap import TcpMapConnection


def flood(port: int, context: ssl.SSLContext, address: str, batch: int, until: float,
          ready: threading.Barrier, received: dict[str, int]) -> None:
    """One connection, one thread (an SSL object must not be used by two
    threads at once): write while the socket takes it, read what comes."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(address, 0))
    sock = context.wrap_socket(raw, server_hostname="localhost")
    mapping = TcpMapConnection()
    request = AsapHandleResolution(b"echo").encode()
    pending = memoryview(mapping.initiate())
    sock.setblocking(False)
    ready.wait()
    total = 0
    stop_at = until + 0.5  # the last answers
    while time.monotonic() < stop_at:
        if not pending and time.monotonic() < until:
            pending = memoryview(b"".join(mapping.send_message(PPID_ASAP, request) for _ in range(batch)))
        readable, writable, _ = select.select([sock], [sock] if pending else [], [], 0.05)
        if readable or sock.pending():
            try:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        received[address] = total
                        return
                    total += len(data)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        if writable and pending:
            try:
                sent = sock.send(pending)
                pending = pending[sent:]
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
    received[address] = total
    try:
        sock.close()
    except OSError:
        pass


def main(argv: list[str]) -> int:
    port, ca_file, seconds, batch = int(argv[0]), argv[1], float(argv[2]), int(argv[3])
    addresses = argv[4:]
    context = ssl.create_default_context(cafile=ca_file)
    ready = threading.Barrier(len(addresses) + 1)
    received: dict[str, int] = {}
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=flood, args=(port, context, a, batch, until, ready, received),
                                daemon=True) for a in addresses]
    for thread in threads:
        thread.start()
    ready.wait(timeout=20)
    print("ready", flush=True)
    for thread in threads:
        thread.join(seconds + 30)
    print(json.dumps(received), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
