"""Code every Hotline service shares: settings, logs, tracing, events, gRPC and the side server.

Services import from here instead of copying; nothing in here knows about a particular service.
"""
