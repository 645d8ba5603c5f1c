"""`python -m ivr`: the IVR service."""
from common.service import run
from ivr.app import main

run("ivr", main)
