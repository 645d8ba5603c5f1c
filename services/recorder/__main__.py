"""`python -m recorder`: run the recorder service."""

from common.service import run
from recorder.app import main
from recorder.settings import RecorderSettings

if __name__ == "__main__":
    run("recorder", main, RecorderSettings.from_env)
