"""A permessage-deflate client for wsfleet-upstream's tests, on Python's `websockets` package
(scripts/install-test-deps), which offers compression the way browsers do.

    deflate_client.py URL TEXT COUNT

Sends TEXT COUNT times, reading each echo, and prints one JSON line: the negotiated
Sec-WebSocket-Extensions, whether every echo matched, and the bytes of text sent against the
bytes that arrived on the socket (the handshake's response included).
"""

import json
import socket
import sys
from urllib.parse import urlsplit

from websockets.sync.client import connect


class CountingSocket(socket.socket):
    """Counts what is read off the wire, where compressed echoes are far smaller than their text."""

    received = 0

    def recv(self, bufsize, flags=0):
        data = super().recv(bufsize, flags)
        self.received += len(data)
        return data


def main(url, text, count):
    parts = urlsplit(url)
    sock = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect((parts.hostname, parts.port))
    with connect(url, sock=sock, compression="deflate", open_timeout=20) as ws:
        echoes_match = True
        for _ in range(count):
            ws.send(text)
            echoes_match &= ws.recv(timeout=20) == text
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
    print(json.dumps({
        "extensions": extensions,
        "echoes_match": echoes_match,
        "text_bytes": len(text.encode()) * count,
        "wire_bytes": sock.received,
    }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
