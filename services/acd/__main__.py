"""`python -m acd`: the ACD service."""
from acd.app import main
from common.service import run

run("acd", main)
