#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into tests/fuzz/corpus/<target>/.

Seeds are small, meaningful inputs from which the fuzzer mutates: valid frames
and streams, valid and broken configurations, topics and patterns, and shm ring
segments (see the input layout at the top of shm_reader_fuzz.cpp). Run it again
after a change to the wire format or the ring layout; crash inputs added to the
corpus as regressions are left alone (only the files named here are written).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- ipcbus.Frame (proto/ipcbus/frame.proto) -------------------------------

def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def key(field, wire):
    return varint((field << 3) | wire)


def frame(seq=0, pub=0, time=0, origin=0, hops=0, ptype=b"", payload=b""):
    out = b""
    if seq:
        out += key(1, 0) + varint(seq)
    if pub:
        out += key(2, 1) + struct.pack("<Q", pub)
    if time:
        out += key(3, 0) + varint(time & 0xFFFFFFFFFFFFFFFF)
    if origin:
        out += key(4, 1) + struct.pack("<Q", origin)
    if hops:
        out += key(5, 0) + varint(hops)
    if ptype:
        out += key(6, 2) + varint(len(ptype)) + ptype
    if payload:
        out += key(15, 2) + varint(len(payload)) + payload
    return out


def delimited(f):
    return varint(len(f)) + f


FULL = frame(300, 0xDEADBEEFCAFEF00D, 1700000000123456789, 42, 2, b"demo.Reading", b"x" * 40)
RAW = frame(1, 7, 1, payload=b"\x00\x01\x02raw bytes")
UNKNOWN = FULL + key(7, 0) + varint(99) + key(9, 5) + b"\x01\x02\x03\x04" + key(10, 2) + varint(3) + b"abc"

write("frame", "full_frame", delimited(FULL))
write("frame", "bare_frame", FULL)
write("frame", "two_frames", delimited(RAW) + delimited(FULL))
write("frame", "empty_frame", delimited(b""))
write("frame", "unknown_fields", delimited(UNKNOWN))
write("frame", "truncated_frame", delimited(FULL)[:20])
write("frame", "four_gib_prefix", b"\xff\xff\xff\xff\x0f" + FULL)
write("frame", "overlong_varint", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01")
write("frame", "negative_time", delimited(frame(5, time=-1, ptype=b"a.B")))

# ---- topics and patterns: "pattern\ntopic" or one line ---------------------

write("topic", "plain", "sensors/imu/accel")
write("topic", "star", "sensors/*/accel\nsensors/imu/accel")
write("topic", "hash", "logs/#\nlogs/app/error/x")
write("topic", "hash_alone", "#\na")
write("topic", "literal_mismatch", "a/b\na/c")
write("topic", "traversal", "../../etc/passwd")
write("topic", "dot_segment", "a/./b\na/b")
write("topic", "nul", b"a\x00b\na")
write("topic", "absolute", "/etc/passwd")
write("topic", "empty_segment", "a//b")
write("topic", "hash_not_last", "#/a\na")
write("topic", "overlong", "a" * 256)
write("topic", "longest", "/".join(["abc"] * 63) + "abc")

# ---- configuration files ----------------------------------------------------

write("config", "full.yaml", """domain: default
runtime_dir: /run/ipcbus
defaults:
  transport: unix
  qos: reliable
  depth: 64
  history: 0
  max_message: 64MiB
  publish_timeout_ms: 1000
  spin_us: 0
  busy_poll: false
  mq_fragment: true
topics:
  - { match: "video/#",  qos: drop_oldest, depth: 8 }
  - { match: "cmd/*",    transport: unix, history: 1 }
  - { match: "remote/#", transport: tcp }
security:
  allow_uids: [1001]
  allow_gids: [2000]
bridge:
  listen: "tcp://127.0.0.1:7447"
  peers: []
  export: ["sensors/#"]
  token: ""
""")
write("config", "flow.yaml", 'domain: d1\ndefaults: { transport: shm, qos: drop_newest, max_message: 512KiB }\n'
                             'topics: [ { match: "logs/#", transport: mq, mq_fragment: false } ]\n')
write("config", "empty.yaml", "")
write("config", "bad_qos.yaml", "defaults:\n  qos: fastest\n")
write("config", "bad_key.yaml", "topics:\n  - { match: a, dpeth: 3 }\n")
write("config", "bad_pattern.yaml", 'topics:\n  - { match: "../x" }\n')
write("config", "duplicate_key.yaml", "domain: a\ndomain: b\n")
write("config", "two_documents.yaml", "domain: a\n---\ndomain: b\n")
write("config", "bad_size.yaml", "defaults: { max_message: 99999999999999999999GiB }\n")
write("config", "anchors.yaml", "defaults: &d { depth: 3 }\ntopics:\n  - { match: a, <<: *d }\n")
write("config", "unclosed.yaml", "defaults: { depth: 3\n")

# ---- shm ring segments (layout: transports/shm/shm_layout.hpp) ---------------

CAPACITY = 4096
DATA_OFFSET = 12288           # align_up(sizeof(ring_header) = 8576, 4096)
RING_MAGIC = 0x31474E4952535049
VERSION = 7
SLOTS = 64


def record(payload, flags=0, seq=0):
    rec = struct.pack("<IIQ", len(payload), flags, seq) + payload
    return rec + b"\x00" * (-len(rec) % 16)


def local_frame(seq=0, pub=0, time=0, origin=0, hops=0, ptype=b"", payload=b""):
    """The local frame layout of the ring (bus/include/ipcbus/frame_codec.hpp)."""
    return struct.pack("<QQqQIIQ", seq, pub, time, origin, hops, len(ptype), len(payload)) + ptype + payload


def frame_record(seq, payload=b"hello"):
    return record(local_frame(seq, 9, 1, ptype=b"demo.Reading", payload=payload), seq=seq)


def structured(qos, max_frame_shift, base, ring, tail=None, intent=0, head=0, released=0, ring_at=0):
    """Mode 1: the harness writes a valid header; `ring` lands at ring offset `ring_at`."""
    data = bytearray(ring_at) + ring
    if tail is None:
        tail = len(ring)
    return (bytes([1, qos, max_frame_shift]) + struct.pack("<Q", base) +
            struct.pack("<HHHH", tail, intent, head, released) + bytes(data))


RECORDS = frame_record(1) + frame_record(2, b"y" * 100) + frame_record(3, b"")
write("shm_reader", "reliable_three_frames", structured(0, 10, 0, RECORDS))
write("shm_reader", "drop_oldest_three_frames", structured(1, 10, 0, RECORDS))
write("shm_reader", "drop_newest_history", structured(2, 10, 4096, RECORDS))
write("shm_reader", "frame_over_limit", structured(0, 0, 0, frame_record(1, b"z" * 200)))
# A padding record at the end of the ring, then a frame at its start.
PAD = record(b"\x00" * (96 - 16), flags=1)
wrap = bytearray(CAPACITY)
wrap[4000:4096] = PAD
first = frame_record(7)
wrap[0:len(first)] = first
write("shm_reader", "padding_at_wrap", structured(0, 10, 4000, bytes(wrap), tail=96 + len(first)))
# A record naming a side segment that is not there: a loss when released, else corrupt.
blob = record(struct.pack("<QQQQ", 1, 1, 70000, 0), flags=2, seq=1) + frame_record(2)
write("shm_reader", "released_side_segment", structured(0, 11, 0, blob, released=2))
write("shm_reader", "missing_side_segment", structured(0, 11, 0, blob))
# Lapped: tail_intent more than a ring ahead of the reader, head on the second record.
write("shm_reader", "lapped_to_head",
      structured(1, 10, 0, RECORDS, intent=CAPACITY + 16 - len(RECORDS), head=len(frame_record(1))))

# Mode 0: a whole segment, header written here.
seg = bytearray(DATA_OFFSET + CAPACITY)
struct.pack_into("<QIIQQQII", seg, 0, RING_MAGIC, VERSION, SLOTS, CAPACITY, DATA_OFFSET, 1, 1, 0)
struct.pack_into("<Q", seg, 64, len(RECORDS))  # tail, alone on its line
struct.pack_into("<QQQ", seg, 128, len(RECORDS), 0, 0)  # tail_intent, head, history_start
seg[DATA_OFFSET:DATA_OFFSET + len(RECORDS)] = RECORDS
write("shm_reader", "whole_segment", b"\x00" + bytes(seg))
write("shm_reader", "whole_segment_bad_capacity", b"\x00" + bytes(seg[:16]) + struct.pack("<Q", 8192) + bytes(seg[24:]))
write("shm_reader", "garbage", b"\x00" + bytes(range(256)) * 4)


# ---- bridge records (services/bridge/bridge_wire.hpp): chunk byte, then the stream

def length_delimited(field, body):
    return key(field, 2) + varint(len(body)) + body


def bridge_record(field, body):
    r = length_delimited(field, body)
    return varint(len(r)) + r


HELLO = bridge_record(1, key(1, 0) + varint(2) + key(3, 1) + struct.pack("<Q", 0x1234) +
                      length_delimited(4, b"a@host") + length_delimited(5, bytes(range(32))))
AUTH = bridge_record(7, length_delimited(1, bytes(range(100, 132))))  # HMAC-SHA256, 32 bytes
INTEREST = bridge_record(3, length_delimited(1, b"sensors/#") + length_delimited(1, b"cmd/*"))
TOPIC = bridge_record(4, key(1, 0) + varint(1) + length_delimited(2, b"sensors/temp") +
                      length_delimited(3, b"demo.Reading"))
DATA = bridge_record(5, key(1, 0) + varint(1) +
                     length_delimited(2, frame(seq=1, pub=7, time=5, origin=9, hops=1, payload=b"hello")))
PING = bridge_record(6, b"")
write("bridge_record", "session", b"\xff" + HELLO + AUTH + INTEREST + TOPIC + DATA + PING)
write("bridge_record", "session_byte_by_byte", b"\x00" + HELLO + AUTH + INTEREST + TOPIC + DATA + PING)
write("bridge_record", "refusal", b"\x10" + bridge_record(2, length_delimited(1, b"wrong token")))
write("bridge_record", "four_gib_length", b"\x03" + b"\xff\xff\xff\xff\x0f" + b"x" * 64)
write("bridge_record", "over_limit", b"\x20" + varint(5000) + b"y" * 300)
write("bridge_record", "overlong_varint", b"\x07" + b"\xff" * 12)
write("bridge_record", "not_a_record", b"\x08" + varint(4) + b"\xff\xff\xff\xff")
write("bridge_record", "bad_frame_in_data", b"\xff" + bridge_record(5, key(1, 0) + varint(1) + length_delimited(2, b"\x0a\xff")))
