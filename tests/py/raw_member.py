#!/usr/bin/env python3
"""A hostile consumer-group member speaking the classic group protocol by hand over a
plaintext listener: it joins GROUP with a subscription (ConsumerProtocolSubscription) of the
caller's choosing (`--metadata-hex`, e.g. garbage), syncs, heartbeats, and rejoins whenever
the coordinator asks, for SECONDS. Prints one JSON line per join and per sync.

raw_member.py --port P --group G --seconds S --metadata-hex HEX
"""
import argparse, json, socket, struct, time

JOIN, SYNC, HEARTBEAT, LEAVE = 11, 14, 12, 13


def s16(b): return struct.pack(">h", len(b)) + b


def s32(b): return struct.pack(">i", len(b)) + b


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.cid = 0

    def call(self, api, version, body):
        self.cid += 1
        header = struct.pack(">hhi", api, version, self.cid) + s16(b"raw-member")
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        n = struct.unpack(">i", self.recv(4))[0]
        data = self.recv(n)
        assert struct.unpack(">i", data[:4])[0] == self.cid
        return data[4:]

    def recv(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError("connection closed")
            out += chunk
        return out


class Reader:
    def __init__(self, b): self.b, self.i = b, 0
    def take(self, n): v = self.b[self.i:self.i + n]; self.i += n; return v
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]
    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()
    def bytes_(self):
        n = self.i32()
        return None if n < 0 else self.take(n)


def join(c, group, member_id, metadata):
    # JoinGroup v2: group, session timeout, rebalance timeout, member id, protocol type,
    # [protocol name, metadata].
    body = (s16(group.encode()) + struct.pack(">ii", 10000, 30000) + s16(member_id.encode())
            + s16(b"consumer") + struct.pack(">i", 1) + s16(b"range") + s32(metadata))
    r = Reader(c.call(JOIN, 2, body))
    r.i32()  # throttle
    err, gen = r.i16(), r.i32()
    protocol, leader, me = r.string(), r.string(), r.string()
    members = [(r.string(), r.bytes_()) for _ in range(max(r.i32(), 0))]
    return err, gen, leader, me, len(members)


def sync(c, group, gen, member_id):
    body = s16(group.encode()) + struct.pack(">i", gen) + s16(member_id.encode()) + struct.pack(">i", 0)
    r = Reader(c.call(SYNC, 1, body))
    r.i32()
    return r.i16()


def heartbeat(c, group, gen, member_id):
    body = s16(group.encode()) + struct.pack(">i", gen) + s16(member_id.encode())
    r = Reader(c.call(HEARTBEAT, 1, body))
    r.i32()
    return r.i16()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--metadata-hex", default="deadbeef")
    a = ap.parse_args()
    metadata = bytes.fromhex(a.metadata_hex)
    c = Conn(a.port)
    end = time.time() + a.seconds
    member_id, gen = "", -1
    while time.time() < end:
        err, gen, leader, member_id, n = join(c, a.group, member_id, metadata)
        print(json.dumps({"join": err, "generation": gen, "leader": leader,
                          "me": member_id, "members_seen": n}), flush=True)
        if err != 0:
            time.sleep(0.5)
            continue
        print(json.dumps({"sync": sync(c, a.group, gen, member_id)}), flush=True)
        while time.time() < end:
            time.sleep(1)
            hb = heartbeat(c, a.group, gen, member_id)
            if hb == 27:  # REBALANCE_IN_PROGRESS: rejoin
                break
            if hb != 0:
                print(json.dumps({"heartbeat": hb}), flush=True)
                member_id = "" if hb == 25 else member_id  # UNKNOWN_MEMBER_ID
                break
    # Leave without a trace: a hostile member just goes away.


if __name__ == "__main__":
    main()
