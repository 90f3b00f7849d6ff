"""permessage-deflate peers for the gateway's compression test, built on the `websockets` package.

    pmd_peer.py upstream          echo server; prints "listening PORT", then per connection
                                  "extensions NAMES" (the negotiated extensions)
    pmd_peer.py client URL TEXT   sends TEXT once, prints one JSON line describing the echo
                                  frame as it arrived on the wire and after decoding
    pmd_peer.py limit URL FROM N  exchanges messages under a 64 KiB limit, then has a message of
                                  N repeated characters sent by FROM (client or upstream); prints
                                  one JSON line: the echoes and how the big message ended

The upstream sets no size limit of its own, so that only the gateway's limit applies; a text
message "bomb:N" makes it answer with N repeated characters.
"""

import asyncio
import json
import socket
import sys

from websockets.asyncio.server import serve
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri


async def upstream():
    async def echo(ws):
        names = ",".join(ext.name for ext in ws.protocol.extensions) or "none"
        print(f"extensions {names}", flush=True)
        async for message in ws:
            if isinstance(message, str) and message.startswith("bomb:"):
                await ws.send("a" * int(message.removeprefix("bomb:")))
            else:
                await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression="deflate", max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening {port}", flush=True)
        await server.serve_forever()


def client(url, text):
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, extensions=[ClientPerMessageDeflateFactory()])
    sock = socket.create_connection((uri.host, uri.port), timeout=20)
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.state is State.CONNECTING:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed during the handshake")
        protocol.receive_data(data)
    response = protocol.events_received()[0]
    protocol.send_text(text.encode())
    sent = b"".join(protocol.data_to_send())
    sock.sendall(sent)

    # The first bytes after the handshake are the echo frame, exactly as the gateway relayed it.
    wire = b""
    echoed = None
    while echoed is None:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed before the echo")
        wire += data
        protocol.receive_data(data)
        frames = [frame for frame in protocol.events_received() if frame.opcode is Opcode.TEXT]
        if frames:
            echoed = frames[0]
    print(json.dumps({
        "extensions": response.headers.get("Sec-WebSocket-Extensions"),
        "sent_rsv1": bool(sent[0] & 0x40),
        "echo_rsv1": bool(wire[0] & 0x40),
        "echo_wire_payload": wire[1] & 0x7F,
        "echo_matches": echoed.data.decode() == text,
    }), flush=True)
    sock.close()


def limit(url, sender, size):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    report = {}
    with connect(url, compression="deflate", max_size=None, open_timeout=20) as ws:
        report["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        # Each inflates to 40 000 bytes, under the limit, and together to more than it; with
        # context takeover the later ones are mostly references into the earlier ones.
        text = ("wsfleet compresses nothing itself; " * 1200)[:40_000]
        messages = [f"{n}{text}"[:40_000] for n in range(5)]
        echoes = []
        for message in messages:
            ws.send(message)
            echoes.append(ws.recv(timeout=20) == message)
        report["echoes_match"] = echoes
        ws.send("a" * size if sender == "client" else f"bomb:{size}")
        try:
            report["big_message_delivered"] = len(ws.recv(timeout=20))
        except ConnectionClosed as closed:
            report["close_code"] = closed.rcvd.code if closed.rcvd else None
            report["close_reason"] = closed.rcvd.reason if closed.rcvd else None
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        asyncio.run(upstream())
    elif sys.argv[1] == "limit":
        limit(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        client(sys.argv[2], sys.argv[3])
