"""The gateway's channel-neutral core: calls, the switch, and the contracts channels meet.

Nothing here knows SIP, FXO ports or browsers; see `contracts.py` for the Protocols and
`docs/gateway.md` for the three rings (core, channels, libraries)."""
