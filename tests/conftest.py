"""Session-wide test settings: offline, deterministic, quiet."""

import atexit
import os
import shutil
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# gnvc's cache (converted metric backbones, anchor rate points) is private to the test session:
# a point cached by an earlier run, or by the user, must never stand in for one a test computes.
_cache = tempfile.mkdtemp(prefix="gnvc-test-cache-")
os.environ["GNVC_CACHE"] = _cache
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
