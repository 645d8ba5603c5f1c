"""SDP (RFC 4566) parsing/serialization and RFC 3264 offer/answer for audio.

The gateway only terminates G.711 audio (PCMU/PCMA, RFC 3551) plus RFC 4733
telephone-event for DTMF, so negotiation is deliberately narrow: one audio
stream is accepted, every other m-line is rejected with port 0 (RFC 3264 6),
and the answer keeps the offerer's payload type numbers.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from gateway.media.audio import FRAME_MS, SAMPLE_RATE

__all__ = [
    "DIRECTIONS",
    "WARN_INCOMPATIBLE_FORMAT",
    "WARN_INCOMPATIBLE_TRANSPORT",
    "WARN_MEDIA_NOT_AVAILABLE",
    "MediaDescription",
    "Negotiated",
    "SdpError",
    "SdpRejected",
    "SessionDescription",
    "answer",
    "negotiate_answer",
    "offer",
    "parse_sdp",
]


class SdpError(ValueError):
    """Malformed SDP or a failed negotiation; the text says why (caller answers 488/400)."""


# RFC 3261 20.43 warning codes for a 488 (Warning: <code> <agent> "<text>").
WARN_INCOMPATIBLE_TRANSPORT = 302  # e.g. only RTP/SAVP offered
WARN_MEDIA_NOT_AVAILABLE = 304  # no audio stream at all
WARN_INCOMPATIBLE_FORMAT = 305  # audio, but none of our codecs


class SdpRejected(SdpError):
    """A well-formed offer we cannot accept: answer 488 with ``warning_code`` and the text."""

    def __init__(self, warning_code: int, text: str) -> None:
        super().__init__(text)
        self.warning_code = warning_code


DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
# RFC 3551 static payload types we may meet without an rtpmap.
STATIC_PAYLOADS: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}
_CODEC_PT = {"PCMU": 0, "PCMA": 8}
_RTP_PROTOS = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
# Session-level lines we keep verbatim, grouped by where RFC 4566 5 orders them.
_BEFORE_C = "iuep"
_AFTER_T = "rzk"


@dataclass
class MediaDescription:
    """One m= section. ``direction`` is effective (session default applied)."""

    media: str
    port: int
    proto: str
    formats: list[int]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    connection: str | None = None
    ptime: int | None = None
    port_count: int | None = None
    other_formats: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    extra_lines: list[str] = field(default_factory=list)

    def codec_name(self, pt: int) -> tuple[str, int] | None:
        """(encoding, clock rate) for a payload type via rtpmap or static table."""
        return self.rtpmap.get(pt) or STATIC_PAYLOADS.get(pt)

    def _lines(self) -> list[str]:
        fmts = (
            " ".join(str(f) for f in self.formats) if self.formats else " ".join(self.other_formats)
        )
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {fmts}".rstrip()]
        out += [ln for ln in self.extra_lines if ln[0] == "i"]
        if self.connection is not None:
            out.append(f"c=IN {_addrtype(self.connection)} {self.connection}")
        out += [ln for ln in self.extra_lines if ln[0] != "i"]
        for pt in self.formats:
            if pt in self.rtpmap:
                name, rate = self.rtpmap[pt]
                out.append(f"a=rtpmap:{pt} {name}/{rate}")
            if pt in self.fmtp:
                out.append(f"a=fmtp:{pt} {self.fmtp[pt]}")
        if self.ptime is not None:
            out.append(f"a=ptime:{self.ptime}")
        for name, value in self.attributes:
            out.append(f"a={name}" if value is None else f"a={name}:{value}")
        out.append(f"a={self.direction}")
        return out


@dataclass
class SessionDescription:
    """A whole SDP body. ``direction`` is the explicit session-level one, if any."""

    origin_username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    origin_address: str = "0.0.0.0"
    session_name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    media: list[MediaDescription] = field(default_factory=list)
    direction: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    extra_lines: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        out = [
            "v=0",
            (
                f"o={self.origin_username} {self.session_id} {self.session_version} IN "
                f"{_addrtype(self.origin_address)} {self.origin_address}"
            ),
            f"s={self.session_name or '-'}",
        ]
        out += [ln for ln in self.extra_lines if ln[0] in _BEFORE_C]
        if self.connection is not None:
            out.append(f"c=IN {_addrtype(self.connection)} {self.connection}")
        out += [ln for ln in self.extra_lines if ln[0] == "b"]
        out.append(f"t={self.timing}")
        out += [ln for ln in self.extra_lines if ln[0] in _AFTER_T]
        for name, value in self.attributes:
            out.append(f"a={name}" if value is None else f"a={name}:{value}")
        if self.direction is not None:
            out.append(f"a={self.direction}")
        for m in self.media:
            out += m._lines()
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _addrtype(addr: str) -> str:
    return "IP6" if ":" in addr else "IP4"


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value!r}: expected 'IN IP4|IP6 address'")
    addr = parts[2].split("/", 1)[0]  # drop multicast TTL / count
    if not addr:
        raise SdpError(f"bad c= address in {value!r}")
    return addr


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line {value!r}: expected 'media port proto fmt...'")
    media, port_text, proto = parts[0], parts[1], parts[2]
    fmts = parts[3:]
    port_s, slash, count_s = port_text.partition("/")
    if not port_s.isdigit() or int(port_s) > 65535 or (slash and not count_s.isdigit()):
        raise SdpError(f"bad port {port_text!r} in m= line")
    m = MediaDescription(media, int(port_s), proto, [], port_count=int(count_s) if slash else None)
    if proto.upper().startswith("RTP/"):
        if not fmts:
            raise SdpError(f"m= line {value!r} lists no payload types")
        for f in fmts:
            if not f.isdigit() or int(f) > 127:
                raise SdpError(f"bad RTP payload type {f!r} in m= line")
            m.formats.append(int(f))
    else:
        m.other_formats = fmts
    return m


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body strictly enough to negotiate safely."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP is not UTF-8: {exc}") from None
    else:
        text = data
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("SDP must start with v=0")
    sd = SessionDescription()
    seen_o = seen_s = seen_t = False
    session_dir: str | None = None
    media_dirs: list[str | None] = []
    current: MediaDescription | None = None
    for ln in lines[1:]:
        if not ln:
            continue
        if len(ln) < 2 or ln[1] != "=":
            raise SdpError(f"malformed SDP line {ln!r}")
        typ, value = ln[0], ln[2:]
        if typ == "m":
            current = _parse_media_line(value)
            sd.media.append(current)
            media_dirs.append(None)
        elif typ == "c":
            addr = _parse_connection(value)
            if current is None:
                sd.connection = addr
            else:
                current.connection = addr
        elif typ == "a":
            name, colon, aval = value.partition(":")
            if name in DIRECTIONS and not colon:
                if current is None:
                    session_dir = name
                else:
                    media_dirs[-1] = name
            elif current is None:
                sd.attributes.append((name, aval if colon else None))
            elif name == "rtpmap":
                pt, enc = _parse_rtpmap(aval)
                current.rtpmap[pt] = enc
            elif name == "fmtp":
                pt_s, _, params = aval.partition(" ")
                if not pt_s.isdigit():
                    raise SdpError(f"bad fmtp line {ln!r}")
                current.fmtp[int(pt_s)] = params.strip()
            elif name == "ptime":
                if not aval.strip().isdigit():
                    raise SdpError(f"bad ptime {aval!r}")
                current.ptime = int(aval.strip())
            else:
                current.attributes.append((name, aval if colon else None))
        elif current is not None:
            current.extra_lines.append(ln)
        elif typ == "o":
            parts = value.split()
            if len(parts) != 6 or parts[3] != "IN":
                raise SdpError(f"bad o= line {value!r}")
            sd.origin_username, sd.session_id, sd.session_version = parts[0], parts[1], parts[2]
            sd.origin_address = parts[5]
            seen_o = True
        elif typ == "s":
            sd.session_name = value
            seen_s = True
        elif typ == "t":
            sd.timing = value
            seen_t = True
        elif typ == "v":
            raise SdpError("duplicate v= line")
        else:
            sd.extra_lines.append(ln)
    if not seen_o:
        raise SdpError("missing o= line")
    if not seen_s:
        raise SdpError("missing s= line")
    if not seen_t:
        raise SdpError("missing t= line")
    sd.direction = session_dir
    for m, mdir in zip(sd.media, media_dirs, strict=False):
        m.direction = mdir or session_dir or "sendrecv"
        if m.connection is None and sd.connection is None:
            raise SdpError(f"no c= line at session level or for the {m.media} stream")
    return sd


def _parse_rtpmap(value: str) -> tuple[int, tuple[str, int]]:
    pt_s, _, enc = value.partition(" ")
    parts = enc.strip().split("/")
    if not pt_s.isdigit() or len(parts) < 2 or not parts[0] or not parts[1].isdigit():
        raise SdpError(f"bad rtpmap {value!r}")
    return int(pt_s), (parts[0], int(parts[1]))


@dataclass
class Negotiated:
    """Result of offer/answer: what the media layer must send and expect.

    ``direction`` is from our point of view (what we put in our SDP, or the
    mirror of the peer's answer).
    """

    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    remote_addr: str
    remote_port: int
    direction: str
    ptime: int


_HOLD_ADDRS = ("0.0.0.0", "::")
# With the RFC 2543 hold address we may still receive but must not send.
_NO_SEND = {
    "sendrecv": "recvonly",
    "sendonly": "inactive",
    "recvonly": "recvonly",
    "inactive": "inactive",
}


def _new_session_id() -> str:
    return str(secrets.randbits(62))


def _telephone_event_pt(m: MediaDescription) -> int | None:
    for pt in m.formats:
        enc = m.rtpmap.get(pt)
        if enc and enc[0].lower() == "telephone-event" and enc[1] == SAMPLE_RATE:
            return pt
    return None


def _audio_ok(m: MediaDescription) -> bool:
    return m.media == "audio" and m.port != 0 and m.proto.upper() in ("RTP/AVP", "RTP/AVPF")


def _rejected(m: MediaDescription) -> MediaDescription:
    """RFC 3264 6: a declined stream keeps its m-line with port 0."""
    return MediaDescription(
        m.media,
        0,
        m.proto,
        list(m.formats[:1]),
        other_formats=list(m.other_formats[:1]),
        direction="inactive" if m.formats else m.direction,
    )


def answer(
    offer: SessionDescription,
    local_addr: str,
    local_port: int,
    supported: tuple[str, ...] = ("PCMU", "PCMA"),
    session_id: str | None = None,
    *,
    session_version: int | None = None,
    prefer: str | None = None,
) -> tuple[Negotiated, SessionDescription]:
    """Answer an offer (RFC 3264 6): the first offered codec we support wins, except that
    ``prefer`` (the codec already in use, on a re-offer) wins whenever it is offered, so a
    session keeps its codec (RFC 6337 5.3 codec locking). The answer lists that one codec
    (plus telephone-event) and mirrors the offer's direction (sendonly -> recvonly,
    inactive -> inactive; a 0.0.0.0 connection means we must not send, RFC 3264 6.1, 8.4).
    ``session_version`` is the o= version (RFC 3264 8: one more for every new SDP of ours).

    Raises :class:`SdpRejected` when no usable audio stream matches (the caller answers
    488 with its warning code and text).
    """
    wanted = {c.upper() for c in supported}
    sid = session_id or _new_session_id()
    ans = SessionDescription(
        origin_username="hotline",
        session_id=sid,
        session_version=str(session_version) if session_version is not None else sid,
        origin_address=local_addr,
        session_name="hotline",
        connection=local_addr,
        timing=offer.timing,
    )
    negotiated: Negotiated | None = None
    offered_audio: list[str] = []
    audio_protos: list[str] = []
    for m in offer.media:
        if m.media == "audio" and m.port != 0:
            audio_protos.append(m.proto)
        if negotiated is not None or not _audio_ok(m):
            ans.media.append(_rejected(m))
            continue
        chosen: tuple[int, str] | None = None
        for pt in m.formats:
            enc = m.codec_name(pt)
            if enc is None or enc[0].lower() == "telephone-event":
                continue
            offered_audio.append(enc[0])
            if enc[0].upper() in wanted and enc[1] == SAMPLE_RATE:
                if chosen is None:
                    chosen = (pt, enc[0].upper())
                if prefer is None or enc[0].upper() == prefer.upper():
                    chosen = (pt, enc[0].upper())
                    break
        if chosen is None:
            ans.media.append(_rejected(m))
            continue
        pt, codec = chosen
        dtmf = _telephone_event_pt(m)
        remote = m.connection or offer.connection or "0.0.0.0"
        direction = _MIRROR[m.direction]
        if remote in _HOLD_ADDRS:  # RFC 3264 8.4: old-style hold, never send there
            direction = _NO_SEND[direction]
        ptime = m.ptime or FRAME_MS
        am = MediaDescription("audio", local_port, m.proto, [pt], direction=direction, ptime=ptime)
        am.rtpmap[pt] = (codec, SAMPLE_RATE)
        if dtmf is not None:
            am.formats.append(dtmf)
            am.rtpmap[dtmf] = m.rtpmap[dtmf]
            am.fmtp[dtmf] = m.fmtp.get(dtmf, "0-16")
        ans.media.append(am)
        negotiated = Negotiated(codec, pt, dtmf, remote, m.port, direction, ptime)
    if negotiated is None:
        ours = ", ".join(supported)
        if not audio_protos:
            raise SdpRejected(WARN_MEDIA_NOT_AVAILABLE, "no audio stream offered")
        if not offered_audio and not any(
            p.upper() in ("RTP/AVP", "RTP/AVPF") for p in audio_protos
        ):
            raise SdpRejected(
                WARN_INCOMPATIBLE_TRANSPORT,
                f"audio offered over {', '.join(sorted(set(audio_protos)))}; we take RTP/AVP",
            )
        offered = ", ".join(dict.fromkeys(offered_audio)) or "no codec"
        raise SdpRejected(
            WARN_INCOMPATIBLE_FORMAT, f"no common codec: offered {offered}; we support {ours}"
        )
    return negotiated, ans


def offer(
    local_addr: str,
    local_port: int,
    codecs: tuple[str, ...] = ("PCMU", "PCMA"),
    dtmf_pt: int | None = 101,
    session_id: str | None = None,
    direction: str = "sendrecv",
    *,
    session_version: int | None = None,
) -> SessionDescription:
    """Build our audio offer (G.711 in preference order + telephone-event); on a re-offer
    pass the session's id and the next ``session_version`` (RFC 3264 8)."""
    if direction not in DIRECTIONS:
        raise SdpError(f"bad direction {direction!r}")
    sid = session_id or _new_session_id()
    m = MediaDescription("audio", local_port, "RTP/AVP", [], direction=direction, ptime=FRAME_MS)
    for c in codecs:
        pt = _CODEC_PT.get(c.upper())
        if pt is None:
            raise SdpError(f"unsupported codec {c!r}")
        m.formats.append(pt)
        m.rtpmap[pt] = (c.upper(), SAMPLE_RATE)
    if dtmf_pt is not None:
        m.formats.append(dtmf_pt)
        m.rtpmap[dtmf_pt] = ("telephone-event", SAMPLE_RATE)
        m.fmtp[dtmf_pt] = "0-16"
    return SessionDescription(
        origin_username="hotline",
        session_id=sid,
        session_version=str(session_version) if session_version is not None else sid,
        origin_address=local_addr,
        session_name="hotline",
        connection=local_addr,
        media=[m],
    )


def negotiate_answer(offer: SessionDescription, answer: SessionDescription) -> Negotiated:
    """UAC side: read the peer's answer to our offer (RFC 3264 7)."""
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"answer has {len(answer.media)} m-lines but the offer had {len(offer.media)}"
        )
    for om, am in zip(offer.media, answer.media, strict=False):
        if om.media != "audio" or am.port == 0:
            continue
        for pt in am.formats:
            if pt not in om.formats:
                continue
            enc = om.codec_name(pt)
            if enc and enc[0].upper() in _CODEC_PT:
                remote = am.connection or answer.connection
                if remote is None:
                    raise SdpError("answer has no connection address")
                dtmf = _telephone_event_pt(am)
                if dtmf is not None and dtmf not in om.formats:
                    dtmf = None
                direction = _MIRROR[am.direction]
                if remote in _HOLD_ADDRS:
                    direction = _NO_SEND[direction]
                return Negotiated(
                    enc[0].upper(),
                    pt,
                    dtmf,
                    remote,
                    am.port,
                    direction,
                    am.ptime or om.ptime or 20,
                )
        raise SdpError("no common codec: answer selects none of the offered G.711 codecs")
    raise SdpError("answer rejected every audio stream")
