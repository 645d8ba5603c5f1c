"""`python -m ivr`: the IVR service."""

from common.service import run
from ivr.app import main
from ivr.settings import IvrSettings

run("ivr", main, IvrSettings.from_env)
