"""`python -m gateway`: the trunk/phone gateway and media engine."""

from common.service import run
from gateway.app import main
from gateway.settings import GatewaySettings

run("gateway", main, GatewaySettings.from_env)
