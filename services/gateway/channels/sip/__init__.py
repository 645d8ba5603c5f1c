"""The SIP channel: trunk calls and registered phones as legs of the core's calls."""

from gateway.channels.sip.carrier import CarrierConfig, CarrierTrunk
from gateway.channels.sip.channel import SipChannel
from gateway.channels.sip.leg import SipLeg
from gateway.channels.sip.trunk import TrunkPolicy

__all__ = ["CarrierConfig", "CarrierTrunk", "SipChannel", "SipLeg", "TrunkPolicy"]
