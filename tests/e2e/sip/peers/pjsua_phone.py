"""A PJSUA2 phone (the `pjsua2-python` wheel, PJSIP as it ships) driven from the command line,
for the SIP conformance tests. It runs in its own process (PJSIP keeps global state) with a
null sound device: it sends a pure tone into the call and records what it hears to a WAV.

Prints one line per event on stdout (``registered``, ``incoming``, ``confirmed``,
``disconnected <code>``, ``error <text>``) and exits when the call is over, or after
``--max-seconds`` in any case (every wait here is bounded).
"""

from __future__ import annotations

import argparse
import sys
import time

import pjsua2 as pj


def say(line: str) -> None:
    print(line, flush=True)


class Call(pj.Call):
    def __init__(self, phone: Phone, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.phone = phone
        self.confirmed_at: float | None = None
        self.done = False

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed_at = time.monotonic()
            say("confirmed")
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            say(f"disconnected {info.lastStatusCode}")
            self.done = True

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(i)
                self.phone.tone.startTransmit(audio)
                audio.startTransmit(self.phone.recorder)
                say("media")
            elif media.status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD:
                audio = self.getAudioMedia(i)
                audio.startTransmit(self.phone.recorder)
                say("remote-hold")
            elif media.status == pj.PJSUA_CALL_MEDIA_LOCAL_HOLD:
                say("local-hold")

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        say(f"xfer-status {prm.statusCode}")
        prm.cont = True


class Account(pj.Account):
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        info = self.getInfo()
        if info.regIsActive:
            say("registered")
        elif prm.code >= 300:
            say(f"error register {prm.code}")

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = Call(self.phone, self, prm.callId)
        self.phone.call = call
        say("incoming")
        answer = pj.CallOpParam()
        answer.statusCode = 180
        call.answer(answer)
        self.phone.answer_at = time.monotonic() + self.phone.args.answer_after


class Phone:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.call: Call | None = None
        self.second: Call | None = None
        self.answer_at: float | None = None
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.logConfig.level = args.log_level
        cfg.logConfig.consoleLevel = args.log_level
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = args.local_port
        tcfg.boundAddress = "127.0.0.1"
        kind = pj.PJSIP_TRANSPORT_TCP if args.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
        self.ep.transportCreate(kind, tcfg)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        for codec in self.ep.codecEnum2():  # G.711 only, PCMA first when asked
            prio = 0
            if codec.codecId.startswith("PCMU/"):
                prio = 200 if args.codec == "PCMU" else 150
            elif codec.codecId.startswith("PCMA/"):
                prio = 200 if args.codec == "PCMA" else 150
            self.ep.codecSetPriority(codec.codecId, prio)
        self.tone = pj.ToneGenerator()
        self.tone.createToneGenerator()
        tone = pj.ToneDesc()
        tone.freq1, tone.freq2, tone.on_msec, tone.off_msec = args.tone, 0, 30000, 0
        tone.volume = 0
        tones = pj.ToneDescVector()
        tones.append(tone)
        self.tone.play(tones, True)
        self.recorder = pj.AudioMediaRecorder()
        self.recorder.createRecorder(args.record)
        acfg = pj.AccountConfig()
        server = f"sip:{args.server}" + (";transport=tcp" if args.transport == "tcp" else "")
        if args.register:
            acfg.idUri = f"sip:{args.register}@{args.server.split(':')[0]}"
            acfg.regConfig.registrarUri = server
            acfg.regConfig.timeoutSec = 300
            cred = pj.AuthCredInfo("digest", "*", args.register, 0, args.password)
            acfg.sipConfig.authCreds.append(cred)
        else:
            acfg.idUri = f"sip:{args.user}@127.0.0.1:{args.local_port}"
        if args.proxy:
            acfg.sipConfig.proxies.append(f"sip:{args.proxy};lr")
        acfg.mediaConfig.transportConfig.port = args.rtp_port
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        self.account = Account(self)
        self.account.create(acfg)

    def run(self) -> int:
        args = self.args
        deadline = time.monotonic() + args.max_seconds
        if args.call:
            self.call = Call(self, self.account)
            prm = pj.CallOpParam(True)
            self.call.makeCall(args.call, prm)
        sent_info = False
        steps = [  # (seconds after confirmed, action), each done once
            (args.hold_after, self._hold),
            (args.unhold_after, self._unhold),
            (args.xfer_after, self._xfer),
            (args.consult_after, self._consult),
            (args.replaces_after, self._replaces),
        ]
        steps = [(at, act) for at, act in steps if at]
        while time.monotonic() < deadline:
            self.ep.libHandleEvents(20)
            call = self.call
            if call is None:
                continue
            if self.answer_at is not None and time.monotonic() >= self.answer_at:
                self.answer_at = None
                ok = pj.CallOpParam()
                ok.statusCode = 200
                call.answer(ok)
            if call.done:
                return 0
            if call.confirmed_at is None:
                continue
            talked = time.monotonic() - call.confirmed_at
            for at, act in list(steps):
                if talked >= at:
                    steps.remove((at, act))
                    act(call)
            if args.info_dtmf and not sent_info and talked >= args.info_after:
                dtmf = pj.CallSendDtmfParam()
                dtmf.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
                dtmf.digits = args.info_dtmf
                call.sendDtmf(dtmf)
                sent_info = True
                say("info-sent")
            if args.hangup_after and talked >= args.hangup_after:
                call.hangup(pj.CallOpParam(True))
                args.hangup_after = 0
        say("error timeout")
        return 2

    def _hold(self, call: Call) -> None:
        call.setHold(pj.CallOpParam(True))
        say("hold-sent")

    def _unhold(self, call: Call) -> None:
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        call.reinvite(prm)
        say("unhold-sent")

    def _xfer(self, call: Call) -> None:
        call.xfer(self.args.xfer_to, pj.CallOpParam(True))
        say("xfer-sent")

    def _consult(self, call: Call) -> None:
        """Attended transfer, first half: the first call on hold, a second call made."""
        call.setHold(pj.CallOpParam(True))
        self.second = Call(self, self.account)
        self.second.makeCall(self.args.consult, pj.CallOpParam(True))
        say("consult-sent")

    def _replaces(self, call: Call) -> None:
        """Second half: REFER the first call's far end to the second call (Replaces)."""
        assert self.second is not None
        call.xferReplaces(self.second, pj.CallOpParam(True))
        say("replaces-sent")

    def close(self) -> None:
        self.ep.hangupAllCalls()
        for _ in range(20):
            self.ep.libHandleEvents(10)
        self.call = self.second = None
        del self.tone, self.recorder, self.account
        self.ep.libDestroy()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="gateway host:port")
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--local-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--register", help="extension to register as")
    ap.add_argument("--password", default="")
    ap.add_argument("--user", default="pjsua")
    ap.add_argument("--call", help="URI to call")
    ap.add_argument("--proxy", help="outbound proxy host:port (loose routing)")
    ap.add_argument("--tone", type=int, required=True, help="Hz of the tone we send")
    ap.add_argument("--record", required=True, help="WAV of what we hear")
    ap.add_argument("--codec", choices=("PCMU", "PCMA"), default="PCMU")
    ap.add_argument("--answer-after", type=float, default=0.3)
    ap.add_argument("--hangup-after", type=float, default=0.0)
    ap.add_argument("--info-dtmf", default="")
    ap.add_argument("--info-after", type=float, default=1.0)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--hold-after", type=float, default=0.0, help="re-INVITE sendonly")
    ap.add_argument("--unhold-after", type=float, default=0.0)
    ap.add_argument("--xfer-to", default="", help="URI to REFER the call to (blind)")
    ap.add_argument("--xfer-after", type=float, default=0.0)
    ap.add_argument("--consult", default="", help="URI of the consult call (attended)")
    ap.add_argument("--consult-after", type=float, default=0.0)
    ap.add_argument("--replaces-after", type=float, default=0.0)
    ap.add_argument("--log-level", type=int, default=3)
    args = ap.parse_args()
    phone = Phone(args)
    try:
        return phone.run()
    finally:
        phone.close()


if __name__ == "__main__":
    sys.exit(main())
