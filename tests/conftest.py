"""Every Ray process the tests start binds 127.0.0.1 (../shared/PLATFORM.md): Ray reads this variable once,
when it is first imported, so it is set before any test module is collected."""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
