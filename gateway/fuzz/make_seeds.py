#!/usr/bin/env python3
"""Writes the committed seed inputs of the fuzz targets (seeds/<target>/)
and the request_head and config dictionaries. Run from gateway/fuzz/:

    python3 make_seeds.py
"""
import os
import re
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# request_head: one switches byte, then the head (see the target's docs).
HEADS = {
    "plain": (0x00, b"GET /v1/chat/completions?stream=1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 2\r\n\r\n"),
    "dots-connection-via": (0x00, b"GET /x/../admin HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\nVia: 1.0 edge\r\n\r\n"),
    "absolute-form": (0x00, b"GET http://open.example/x?q=1 HTTP/1.1\r\nHost: api.example\r\n\r\n"),
    "trusted-chain": (0x08, b"POST /v1/a HTTP/1.1\r\nHost: x.tenant.example\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nTE: gzip, trailers\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "loosened-escapes": (0x03, b"GET /a%2fb//c/%2e%2e/%7euser HTTP/1.1\r\nHost: api.example.com:8443\r\n\r\n"),
    "raw-http10": (0x04, b"GET /raw/../path HTTP/1.0\r\n\r\n"),
    "asterisk": (0x00, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    "upgrade-v6-tls": (0x30, b"GET /ws HTTP/1.1\r\nHost: [2001:db8::1]:443\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    "utf8-path": (0x00, "GET /files/résumé.pdf HTTP/1.1\r\nHost: a.example\r\nx-canary: 1\r\n\r\n".encode()),
    "admin-host": (0x00, b"GET /admin/users HTTP/1.1\r\nHost: API.EXAMPLE.COM.\r\nAuthorization: Bearer x\r\n\r\n"),
}
for name, (switches, head) in HEADS.items():
    write("request_head", name, bytes([switches]) + head)

DICT = [
    "GET", "POST", "OPTIONS", "CONNECT", "HTTP/1.1", "HTTP/1.0", "\\x0D\\x0A", ": ", "http://", "https://",
    "/admin", "/admin/", "/..", "/.", "//", "%2e", "%2E", "%2f", "%5c", "%61", "%7e", "%", "\\\\", "?", "#", "*", "@",
    "Host: ", "Connection: ", "Via: ", "TE: ", "Transfer-Encoding: ", "Content-Length: ", "Forwarded: ",
    "host", "connection", "keep-alive", "proxy-connection", "te", "trailers", "trailer", "transfer-encoding",
    "upgrade", "via", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "chunked",
    "api.example.com", ".tenant.example", "x-canary", ":443", ":8443", "[::1]", "/ws", "/v1",
]
with open(os.path.join(HERE, "request_head.dict"), "w") as f:
    for i, tok in enumerate(DICT):
        f.write(f'kw{i}="{tok}"\n')


# ws_lane: read byte, sink byte, limit byte, then the agent's stream.
def frame(fin, opcode, payload, key=b"\x11\x22\x33\x44", rsv=0, masked=True):
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def close(code, reason=b""):
    return struct.pack(">H", code) + reason


STREAMS = {
    "text": (255, 3, 255, frame(True, 1, b"hello")),
    "fragments-ping": (2, 0, 255, frame(False, 1, b"hel") + frame(True, 9, b"ping!") + frame(False, 0, "lo wö".encode()) + frame(True, 0, b"rld") + frame(True, 2, bytes([0, 1, 2, 255]))),
    "binary-chunked": (2, 6, 50, frame(True, 2, bytes(range(200))) + frame(True, 10, b"")),
    "close-then-more": (1, 1, 10, frame(True, 8, close(1000, b"bye")) + frame(True, 1, b"after")),
    "utf8-split": (0, 4, 10, frame(False, 1, b"a\xc3") + frame(True, 0, b"\xa9b")),
    "len16": (100, 2, 200, frame(True, 2, bytes(300)) + frame(True, 1, b"ok")),
    "too-large": (5, 3, 0, frame(False, 2, bytes(10)) + frame(True, 0, bytes(10))),
    "bad-utf8": (255, 3, 10, frame(True, 1, b"\xc3\x28")),
    "unmasked": (255, 3, 10, frame(True, 1, b"x", masked=False)),
    "rsv": (255, 3, 10, frame(True, 1, b"x", rsv=0x40)),
    "bad-close": (255, 3, 10, frame(True, 8, close(1005))),
    "close-bad-reason": (255, 3, 10, frame(True, 8, close(1000, b"\xff"))),
    "continuation-first": (255, 3, 10, frame(True, 0, b"x")),
    "cut-mid-frame": (3, 0x0b, 100, frame(True, 2, bytes(range(100)))[:60]),
}
for name, (read, sink, limit, stream) in STREAMS.items():
    write("ws_lane", name, bytes([read, sink, limit]) + stream)


# config: the repo's config files, and every key the parser knows.
for name in sorted(os.listdir(os.path.join(REPO, "config"))):
    if name.endswith(".toml"):
        shutil.copy(os.path.join(REPO, "config", name), os.path.join(HERE, "seeds", "config", name))
keys = set()
src = os.path.join(REPO, "gateway", "src", "config")
for name in os.listdir(src):
    with open(os.path.join(src, name)) as f:
        text = f.read()
    keys.update(re.findall(r"^\s+pub ([a-z_][a-z0-9_]*): ", text, re.M))
    keys.update(re.findall(r'"([a-z][a-z0-9_-]*)"', text))
with open(os.path.join(HERE, "config.dict"), "w") as f:
    for i, k in enumerate(sorted(keys)):
        f.write(f'k{i}="{k}"\n')
    for i, tok in enumerate(["[[routes]]", "[[listeners]]", "[clusters.", "[filters.", " = ", "\\x0A", "\\\"", "{ ", " }", "[", "]", "\"30s\"", "\"127.0.0.1:8443\""]):
        f.write(f'p{i}="{tok}"\n')


# decode: agentmux.v1 messages (gateway/src/mux/PROTOCOL.md).
def mux(kind, flags, session, seq, payload=b""):
    return struct.pack(">BBQQI", kind, flags, session, seq, len(payload)) + payload


def str16(s):
    return struct.pack(">H", len(s)) + s


S = 0x000000010000002A
OPEN = struct.pack(">I", 65536) + str16(b"llm") + str16(b"ci") + str16(b"/v1/realtime?model=x") \
    + struct.pack(">H", 1) + str16(b"x-trace") + str16(b"abc") + struct.pack(">H", 1) + str16(b"agentmux.v1")
MESSAGES = {
    "worked-example": mux(3, 3, S, 7, b"hi") + mux(4, 0, S, 3),
    "close": mux(6, 0, S, 8, struct.pack(">H", 1000) + b"bye"),
    "open": mux(1, 0, S, 0, OPEN),
    "open-ok": mux(2, 0, S, 0, struct.pack(">I", 65536) + str16(b"agentmux.v1")),
    "window-resume": mux(5, 0, S, 0, struct.pack(">Q", 1 << 20)) + mux(7, 0, S, 12, struct.pack(">Q", 1 << 20)),
    "error": mux(8, 0, 0, 0, struct.pack(">H", 14) + b"draining"),
    "takeover": mux(9, 0, S, 5, struct.pack(">I", 65536)),
    "data-fragments": mux(3, 2, S, 1, "hé".encode()[:2]) + mux(3, 3, S, 2, "hé".encode()[2:]),
}
for name, message in MESSAGES.items():
    write("decode", name, message)
