"""Channels: each adapts one technology (SIP, analog lines, later WebRTC) to the core's
contracts (`gateway.core.contracts`). A channel may import the core and the libraries;
the core imports no channel."""
