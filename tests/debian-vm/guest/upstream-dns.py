#!/usr/bin/env python3
"""The site's DNS server of the Debian VM tier (a test stand-in, not a real
DNS server): answers A for upstream.example.test with 192.0.2.99, nothing
(NODATA) for its other types, and NXDOMAIN for every other name, over UDP
on 192.0.2.53:53. Each query is logged to stdout (the journal).

Usage: upstream-dns.py ADDRESS PORT
"""
import socket
import struct
import sys

NAME = "upstream.example.test"
ANSWER = "192.0.2.99"


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # On a host without systemd-resolved, Debian's dnsmasq starts at boot
    # with its packaged configuration, bound to the wildcard 0.0.0.0:53 with
    # SO_REUSEADDR; the kernel lets this socket bind the more specific
    # 192.0.2.53:53 beside it only if it sets the option too (the site's
    # server is another machine on a real network; here it shares the VM).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    print(f"upstream-dns: answering {NAME} on {addr}:{port}", flush=True)
    while True:
        data, peer = s.recvfrom(4096)
        if len(data) < 17:
            continue
        qid, _flags, qdcount = struct.unpack(">HHH", data[:6])
        if qdcount != 1:
            continue
        i, labels = 12, []
        while i < len(data) and data[i]:
            labels.append(data[i + 1:i + 1 + data[i]].decode(errors="replace").lower())
            i += 1 + data[i]
        if i + 5 > len(data):
            continue
        qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
        question = data[12:i + 5]
        name = ".".join(labels)
        known = name == NAME
        if known and qtype == 1:
            header = struct.pack(">HHHHHH", qid, 0x8580, 1, 1, 0, 0)
            # TTL 0: no resolver in the chain may answer from its cache once
            # this server is gone (the scenario stops it and expects drift).
            answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton(ANSWER)
        else:
            # NOERROR without records (NODATA) for the known name, NXDOMAIN
            # for any other: both final answers, so no resolver retries.
            header = struct.pack(">HHHHHH", qid, 0x8580 if known else 0x8583, 1, 0, 0, 0)
            answer = b""
        s.sendto(header + question + answer, peer)
        print(f"upstream-dns: {name} type {qtype} from {peer[0]}: {'A' if known and qtype == 1 else ('NODATA' if known else 'NXDOMAIN')}", flush=True)


if __name__ == "__main__":
    main()
