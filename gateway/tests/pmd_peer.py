"""permessage-deflate peers for the gateway's compression test, built on the `websockets` package.

    pmd_peer.py upstream          echo server; prints "listening PORT", then per connection
                                  "extensions NAMES" (the negotiated extensions)
    pmd_peer.py client URL TEXT   sends TEXT once, prints one JSON line describing the echo
                                  frame as it arrived on the wire and after decoding
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
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression="deflate") as server:
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


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        asyncio.run(upstream())
    else:
        client(sys.argv[2], sys.argv[3])
