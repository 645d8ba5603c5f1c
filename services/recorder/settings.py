"""The recorder's settings. It has no variable of its own yet: its database is resolved by the
shared base (`Settings.db_url("recorder")`) and recordings live under `$VAR_DIR/recordings`.

With `common.settings` the only reader of `HOTLINE_*` for the recorder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.settings import Settings


@dataclass(frozen=True)
class RecorderSettings(Settings):
    @property
    def recordings_dir(self) -> Path:
        """Where `LocalRecordingStore` keeps the recordings."""
        return self.var_dir / "recordings"
