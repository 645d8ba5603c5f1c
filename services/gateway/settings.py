"""The gateway's settings: SIP, RTP, trunks, prompts, extensions and the analog line card.

With `common.settings` the only reader of `HOTLINE_*` for the gateway; everything else in the
gateway receives these values as arguments. docs/configuration.md lists every variable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.settings import REPO_ROOT, Env, Settings, SettingsError
from gateway.analog.config import LAWS, CardConfigError, CardSpec, parse_card_spec
from gateway.capacity import machine_limits
from gateway.channels.sip.admission import AdmissionLimits
from gateway.channels.sip.carrier import CarrierConfig
from gateway.channels.sip.numbering import NumberRules, NumberRulesError
from gateway.dialplan import CLASSES, DEFAULT_PATTERNS, DialPlan, DialPlanError
from gateway.sip.transport import TcpLimits

_NUMBER = re.compile(r"^\+?[0-9]{1,32}$")
_TRUNK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,253}$")
_USER = re.compile(r"^([0-9]{1,10}):([0-9]{1,10})$")
CODECS = ("PCMU", "PCMA")


def _numbers(env: Env, name: str, default: str) -> tuple[str, ...]:
    numbers = env.items(name, default)
    for number in numbers:
        if not _NUMBER.match(number):
            raise env.error(
                name,
                env.text(name, default),
                f"has {number!r}, which is not a number (digits, optionally a leading +)",
            )
    return numbers


def _at_least(env: Env, name: str, default: int, minimum: int) -> int:
    value = env.integer(name, default)
    if value < minimum:
        raise env.error(name, env.text(name, str(default)), f"must be at least {minimum}")
    return value


@dataclass(frozen=True)
class GatewaySettings(Settings):
    sip_host: str = "127.0.0.1"  # HOTLINE_SIP_HOST: advertised in Via, Contact, SDP
    sip_port: int = 5060  # HOTLINE_SIP_PORT: UDP and TCP
    rtp_low: int = 20000  # HOTLINE_RTP_LOW / HOTLINE_RTP_HIGH
    rtp_high: int = 25999
    sip_realm: str = "hotline"  # HOTLINE_SIP_REALM: digest realm
    prompt_dir: Path = REPO_ROOT / "var" / "prompts"  # HOTLINE_PROMPT_DIR, $VAR_DIR/prompts
    trunk_dids: tuple[str, ...] = ("10000", "10001")  # HOTLINE_TRUNK_DIDS
    trunk_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # HOTLINE_TRUNK_ALLOW (CIDRs)
    analog_card: CardSpec = CardSpec("sim", ports=4)  # HOTLINE_ANALOG_CARD
    analog_law: str = "alaw"  # HOTLINE_ANALOG_LAW: alaw or ulaw (DAHDI)
    analog_did: str = "10000"  # HOTLINE_ANALOG_DID
    sim_control_port: int = 9110  # HOTLINE_SIM_CONTROL_PORT
    sim_control_host: str = "127.0.0.1"  # HOTLINE_SIM_CONTROL_HOST: loopback, never bind_host
    tcp_limits: TcpLimits = TcpLimits()  # HOTLINE_SIP_TCP_*
    #: HOTLINE_CALLS_PER_SOURCE_*, HOTLINE_TRUNK_*, HOTLINE_GATEWAY_MAX_CALLS / _MAX_CPS
    admission: AdmissionLimits = field(default_factory=lambda: _admission(20000, 25999))
    extensions_file: Path | None = None  # HOTLINE_GATEWAY_EXTENSIONS; None: demo 8001-8016, 8090
    state_file: Path = REPO_ROOT / "var" / "gateway-state.sqlite"  # HOTLINE_GATEWAY_STATE
    recording_spool: Path = REPO_ROOT / "var" / "spool"  # HOTLINE_RECORDING_SPOOL
    trunk_trust_pai: bool = False  # HOTLINE_TRUNK_TRUST_PAI: ANI from P-Asserted-Identity
    carrier: CarrierConfig | None = None  # HOTLINE_SIP_TRUNK_*; None: no carrier trunk
    dial_plan: DialPlan = DialPlan()  # HOTLINE_DIAL_<CLASS>: click-to-dial number classes
    dialout_ring_timeout_ms: int = 30000  # HOTLINE_DIALOUT_RING_TIMEOUT_MS: customer give-up
    #: HOTLINE_GATEWAY_FLOW_OWNER_TIMEOUT_S: an IVR silent this long has lost its calls in
    #: menus to the live IVRs (core/flow_owners.py); they say they are alive every 5 s
    flow_owner_timeout_s: float = 20.0
    #: HOTLINE_GATEWAY_REALTIME_PRIORITY: SCHED_RR priority (1-99) of the event loop that sends
    #: every frame; 0: normal scheduling (gateway/priority.py)
    realtime_priority: int = 0
    #: HOTLINE_GATEWAY_USER: uid:gid a gateway started as root becomes once it has its priority
    user: tuple[int, int] | None = None

    @classmethod
    def read(cls, env: Env) -> dict[str, Any]:
        base = super().read(env)
        rtp_low, rtp_high = env.integer("RTP_LOW", 20000), env.integer("RTP_HIGH", 25999)
        if not 1024 <= rtp_low < rtp_high <= 65535:
            raise SettingsError(
                f"HOTLINE_RTP_LOW/HIGH={rtp_low}/{rtp_high} is not a valid port range"
            )
        realm = env.text("SIP_REALM", "hotline")
        if not realm.strip() or '"' in realm or "\\" in realm:
            raise env.error("SIP_REALM", realm, "must be non-empty, without quotes or backslashes")
        card = env.text("ANALOG_CARD", "sim:4")
        try:
            analog_card = parse_card_spec(card)
        except CardConfigError as exc:
            raise SettingsError(f"HOTLINE_ANALOG_CARD={exc}") from None
        law = env.text("ANALOG_LAW", "alaw")
        if law not in LAWS:
            raise env.error("ANALOG_LAW", law, f"is not one of {', '.join(LAWS)}")
        analog_did = env.text("ANALOG_DID", "10000")
        if not _NUMBER.match(analog_did):
            raise env.error(
                "ANALOG_DID", analog_did, "is not a number (digits, optionally a leading +)"
            )
        tcp = TcpLimits(
            max_connections=_at_least(env, "SIP_TCP_MAX_CONNECTIONS", 512, 1),
            max_per_source=_at_least(env, "SIP_TCP_MAX_PER_SOURCE", 32, 1),
            read_timeout_s=env.number("SIP_TCP_READ_TIMEOUT_S", 10.0, above=0),
            idle_timeout_s=env.number("SIP_TCP_IDLE_TIMEOUT_S", 300.0, above=0),
            max_lifetime_s=env.number("SIP_TCP_MAX_LIFETIME_S", 14400.0, above=0),
        )
        admission = _admission(
            rtp_low,
            rtp_high,
            source_cps=env.number("CALLS_PER_SOURCE_CPS", 10.0, above=0),
            source_max_calls=_at_least(env, "CALLS_PER_SOURCE_MAX", 50, 1),
            trunk_cps=env.number("TRUNK_CPS", 20.0, above=0),
            trunk_max_calls=_at_least(env, "TRUNK_MAX_CALLS", 100, 1),
            gateway_cps=env.number("GATEWAY_MAX_CPS", 0.0, minimum=0),
            gateway_max_calls=_at_least(env, "GATEWAY_MAX_CALLS", 0, 0),
            max_answer_delay_s=env.number("GATEWAY_MAX_ANSWER_DELAY_S", 2.0, minimum=0),
        )
        return base | {
            "sip_host": env.text("SIP_HOST", "127.0.0.1"),
            "sip_port": env.port("SIP_PORT", 5060),
            "rtp_low": rtp_low,
            "rtp_high": rtp_high,
            "sip_realm": realm,
            "prompt_dir": env.path("PROMPT_DIR", base["var_dir"] / "prompts"),
            "trunk_dids": _numbers(env, "TRUNK_DIDS", "10000,10001"),
            "trunk_allow": env.networks("TRUNK_ALLOW", "127.0.0.0/8,::1/128"),
            "analog_card": analog_card,
            "analog_law": law,
            "analog_did": analog_did,
            "sim_control_port": env.port("SIM_CONTROL_PORT", 9110),
            "sim_control_host": env.text("SIM_CONTROL_HOST", "127.0.0.1"),
            "tcp_limits": tcp,
            "admission": admission,
            "extensions_file": env.optional_path("GATEWAY_EXTENSIONS"),
            "state_file": env.path("GATEWAY_STATE", base["var_dir"] / "gateway-state.sqlite"),
            "recording_spool": env.path("RECORDING_SPOOL", base["var_dir"] / "spool"),
            "trunk_trust_pai": env.flag("TRUNK_TRUST_PAI", False),
            "carrier": _carrier(env),
            "dial_plan": _dial_plan(env),
            "dialout_ring_timeout_ms": _at_least(env, "DIALOUT_RING_TIMEOUT_MS", 30000, 1000),
            "flow_owner_timeout_s": env.number("GATEWAY_FLOW_OWNER_TIMEOUT_S", 20.0, minimum=1),
            "realtime_priority": _realtime_priority(env),
            "user": _user(env),
        }


def _realtime_priority(env: Env) -> int:
    value = env.integer("GATEWAY_REALTIME_PRIORITY", 0)
    if not 0 <= value <= 99:
        raise env.error(
            "GATEWAY_REALTIME_PRIORITY",
            str(value),
            "must be 0 (normal scheduling) or a SCHED_RR priority 1-99",
        )
    return value


def _user(env: Env) -> tuple[int, int] | None:
    raw = env.text("GATEWAY_USER", "").strip()
    if not raw:
        return None
    match = _USER.match(raw)
    if match is None:
        raise env.error("GATEWAY_USER", raw, "is not uid:gid (two numbers, e.g. 10001:10001)")
    return int(match[1]), int(match[2])


def _dial_plan(env: Env) -> DialPlan:
    """HOTLINE_DIAL_INTERNAL, _LOCAL, _LONG_DISTANCE, _INTERNATIONAL: a regular expression
    the whole number must match (empty: the class matches nothing)."""
    patterns = {}
    for name in CLASSES:
        key = f"DIAL_{name.upper()}"
        value = env.text(key, DEFAULT_PATTERNS[name])
        if value:
            patterns[name] = value
    try:
        return DialPlan(patterns)
    except DialPlanError as exc:
        raise SettingsError(f"HOTLINE_DIAL_*: {exc}") from None


def _admission(
    rtp_low: int,
    rtp_high: int,
    source_cps: float = 10.0,
    source_max_calls: int = 50,
    trunk_cps: float = 20.0,
    trunk_max_calls: int = 100,
    gateway_cps: float = 0.0,
    gateway_max_calls: int = 0,
    max_answer_delay_s: float = 2.0,
) -> AdmissionLimits:
    """New-call limits; the gateway's own (0: unset) are sized from the machine: the RTP
    range, the descriptor limit and the CPUs (`gateway.capacity.machine_limits`)."""
    machine_calls, machine_cps = machine_limits(rtp_low, rtp_high)
    gateway_cps = gateway_cps or machine_cps
    return AdmissionLimits(
        source_cps=source_cps,
        source_burst=max(1, math.ceil(2 * source_cps)),
        source_max_calls=source_max_calls,
        trunk_cps=trunk_cps,
        trunk_burst=max(1, math.ceil(2 * trunk_cps)),
        trunk_max_calls=trunk_max_calls,
        gateway_cps=gateway_cps,
        gateway_burst=max(1, math.ceil(2 * gateway_cps)),
        gateway_max_calls=gateway_max_calls or machine_calls,
        max_answer_delay_s=max_answer_delay_s,
    )


def _rules(env: Env, name: str) -> NumberRules:
    raw = env.text(name, "")
    try:
        return NumberRules.parse(raw)
    except NumberRulesError as exc:
        raise env.error(name, raw, f"is not a list of prefix=>replacement rules: {exc}") from None


def _password(env: Env) -> str:
    password = env.raw("SIP_TRUNK_PASSWORD")
    path = env.optional_path("SIP_TRUNK_PASSWORD_FILE")
    if password and path is not None:
        raise SettingsError(
            "set HOTLINE_SIP_TRUNK_PASSWORD or HOTLINE_SIP_TRUNK_PASSWORD_FILE, not both"
        )
    if path is None:
        return password or ""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise env.error("SIP_TRUNK_PASSWORD_FILE", str(path), f"cannot be read: {exc}") from None


def _carrier(env: Env) -> CarrierConfig | None:
    """The carrier trunk (HOTLINE_SIP_TRUNK_*), or None when HOTLINE_SIP_TRUNK_HOST is empty."""
    host = env.text("SIP_TRUNK_HOST", "").strip()
    if not host:
        return None
    if not _HOST.match(host):
        raise env.error("SIP_TRUNK_HOST", host, "is not a host name or IP address")
    name = env.text("SIP_TRUNK_NAME", "sip-trunk")
    if not _TRUNK_NAME.match(name) or name == "analog":
        raise env.error("SIP_TRUNK_NAME", name, "must be 1-32 of a-z 0-9 _ - (and not 'analog')")
    transport = env.text("SIP_TRUNK_TRANSPORT", "udp").lower()
    if transport not in ("udp", "tcp"):
        raise env.error("SIP_TRUNK_TRANSPORT", transport, "is not udp or tcp")
    username = env.text("SIP_TRUNK_USERNAME", "")
    password = _password(env)
    register = env.flag("SIP_TRUNK_REGISTER", False)
    if register and not (username and password):
        raise SettingsError(
            "HOTLINE_SIP_TRUNK_REGISTER=true needs HOTLINE_SIP_TRUNK_USERNAME and a password "
            "(HOTLINE_SIP_TRUNK_PASSWORD or HOTLINE_SIP_TRUNK_PASSWORD_FILE)"
        )
    expires = env.integer("SIP_TRUNK_REGISTER_EXPIRES", 3600)
    if not 60 <= expires <= 86400:
        raise env.error("SIP_TRUNK_REGISTER_EXPIRES", str(expires), "must be 60-86400 seconds")
    caller_id = env.text("SIP_TRUNK_CALLER_ID", "")
    if caller_id and not _NUMBER.match(caller_id):
        raise env.error(
            "SIP_TRUNK_CALLER_ID", caller_id, "is not a number (digits, optionally a leading +)"
        )
    codecs = tuple(c.upper() for c in env.items("SIP_TRUNK_CODECS", "PCMU,PCMA"))
    bad = [c for c in codecs if c not in CODECS]
    if not codecs or bad or len(set(codecs)) != len(codecs):
        raise env.error(
            "SIP_TRUNK_CODECS",
            env.text("SIP_TRUNK_CODECS", ""),
            f"must list PCMU and/or PCMA once each{f' (not {bad[0]})' if bad else ''}",
        )
    max_calls = env.integer("SIP_TRUNK_MAX_CALLS", 30)
    if max_calls < 1:
        raise env.error("SIP_TRUNK_MAX_CALLS", str(max_calls), "must be at least 1")
    session_expires = env.integer("SIP_TRUNK_SESSION_EXPIRES", 1800)
    if session_expires != 0 and session_expires < 90:
        raise env.error(
            "SIP_TRUNK_SESSION_EXPIRES", str(session_expires), "must be 0 (off) or at least 90"
        )
    return CarrierConfig(
        host=host,
        name=name,
        port=env.port("SIP_TRUNK_PORT", 5060),
        transport=transport,
        domain=env.text("SIP_TRUNK_DOMAIN", ""),
        username=username,
        password=password,
        realm=env.text("SIP_TRUNK_REALM", "") or None,
        register=register,
        register_expires=expires,
        keepalive_s=env.number("SIP_TRUNK_KEEPALIVE_S", 30.0, minimum=0),
        number_in=_rules(env, "SIP_TRUNK_NUMBER_IN"),
        number_out=_rules(env, "SIP_TRUNK_NUMBER_OUT"),
        caller_id=caller_id,
        codecs=codecs,
        max_calls=max_calls,
        calls_per_second=env.number("SIP_TRUNK_CPS", 5.0, above=0),
        trust_pai=env.flag("SIP_TRUNK_TRUST_PAI", True),
        session_expires=session_expires,
    )
