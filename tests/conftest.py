"""Session-wide test settings: offline, deterministic, quiet."""

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
