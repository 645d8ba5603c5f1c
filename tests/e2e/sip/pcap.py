"""A pcap of G.711 RTP for SIPp's play_pcap_audio, made from samples (SIPp replays the
packets with their recorded timing and rewrites the addresses)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from gateway.media.g711 import CODECS, PAYLOAD_TYPES

_ENCODERS = {pt: CODECS[name][0] for name, pt in PAYLOAD_TYPES.items()}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path, samples: np.ndarray, payload_type: int = 0) -> None:
    """G.711 RTP (payload type 0: µ-law, 8: A-law), 20 ms per packet, from 127.0.0.1:6000 to
    127.0.0.1:6002."""
    encode = _ENCODERS[payload_type]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # Ethernet
    ssrc, seq, ts = 0x5150AA01, 1, 0
    for i in range(0, samples.size - 159, 160):
        frame = samples[i : i + 160].astype(np.int16)
        rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if i == 0 else 0), seq, ts, ssrc)
        rtp += encode(frame)
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            seq,
            0,
            64,
            17,
            0,
            bytes([127, 0, 0, 1]),
            bytes([127, 0, 0, 1]),
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        eth = b"\0" * 12 + b"\x08\x00"
        packet = eth + ip + udp
        t = i / 8000
        out.append(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(packet), len(packet)))
        out.append(packet)
        seq += 1
        ts += 160
    path.write_bytes(b"".join(out))
