"""`python -m recorder`: run the recorder service."""
from common.service import run

from recorder.app import main

if __name__ == "__main__":
    run("recorder", main)
