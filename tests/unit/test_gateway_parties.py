"""Who hears whom (gateway.core.parties.hearing): hold, conference, listen, whisper, barge,
mute, consult."""

from __future__ import annotations

from gateway.core.parties import MOH, MonitorMode, Party, Role, hearing, is_plain
from tests.unit.gateway_rig import FakeChannel, FakeLeg


def party(key: str, role: Role, mode: MonitorMode | None = None) -> Party:
    return Party(FakeLeg(FakeChannel(), leg_id=key), role, mode=mode)


CALLER, AGENT = party("c", Role.CALLER), party("a", Role.AGENT)


def test_two_parties_hear_each_other_and_are_plain() -> None:
    assert hearing([CALLER, AGENT]) == {"c": {"a"}, "a": {"c"}}
    assert is_plain([CALLER, AGENT])
    assert not is_plain([CALLER, AGENT], held={"c"})
    assert not is_plain([CALLER, AGENT], muted={"a"})


def test_the_held_caller_hears_music_and_the_agent_nobody() -> None:
    assert hearing([CALLER, AGENT], held={"c"}) == {"c": {MOH}, "a": set()}


def test_conference_everyone_hears_all_others() -> None:
    p = party("p", Role.PARTY)
    assert hearing([CALLER, AGENT, p]) == {"c": {"a", "p"}, "a": {"c", "p"}, "p": {"c", "a"}}
    assert not is_plain([CALLER, AGENT, p])


def test_listen_whisper_barge() -> None:
    sup = party("s", Role.SUPERVISOR, MonitorMode.LISTEN)
    assert hearing([CALLER, AGENT, sup]) == {"c": {"a"}, "a": {"c"}, "s": {"c", "a"}}
    sup.mode = MonitorMode.WHISPER
    assert hearing([CALLER, AGENT, sup]) == {"c": {"a"}, "a": {"c", "s"}, "s": {"c", "a"}}
    sup.mode = MonitorMode.BARGE
    assert hearing([CALLER, AGENT, sup]) == {"c": {"a", "s"}, "a": {"c", "s"}, "s": {"c", "a"}}


def test_muted_agent_is_heard_by_nobody_but_still_hears() -> None:
    sup = party("s", Role.SUPERVISOR, MonitorMode.LISTEN)
    assert hearing([CALLER, AGENT, sup], muted={"a"}) == {"c": set(), "a": {"c"}, "s": {"c"}}


def test_consult_caller_held_agent_talks_to_target_and_swap() -> None:
    target = party("t", Role.CONSULT)
    assert hearing([CALLER, AGENT, target], held={"c"}) == {"c": {MOH}, "a": {"t"}, "t": {"a"}}
    assert hearing([CALLER, AGENT, target], held={"t"}) == {"c": {"a"}, "a": {"c"}, "t": {MOH}}
