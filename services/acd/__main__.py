"""`python -m acd`: the ACD service."""

from acd.app import main
from acd.settings import AcdSettings
from common.service import run

run("acd", main, AcdSettings.from_env)
