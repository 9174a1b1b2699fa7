from __future__ import annotations

import os

# Tests never pick up plugins that happen to be installed, except the ones they install.
os.environ.setdefault("PIPELINE_TEST", "1")
