"""Where handlers find the web app's peers: the ACD and gateway clients, the CDR store.

Kept apart from the route modules so each of them can reach the others' peers without
importing one another."""

from __future__ import annotations

from aiohttp import web

from crm.agent_control import AgentControl
from crm.call_commands import CallCommands
from crm.cdr_store import CdrStore
from crm.recording_archive import RecordingArchive

ACD = web.AppKey("acd", AgentControl)
CDRS = web.AppKey("cdrs", CdrStore)
GATEWAY = web.AppKey("gateway", CallCommands)
RECORDER = web.AppKey("recorder", RecordingArchive)
