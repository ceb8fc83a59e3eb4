"""Makes the packages named in $DLRUN_BLOCK unimportable, as if they were not installed.

Put this folder on PYTHONPATH of a subprocess: Python imports sitecustomize at start-up.
"""

import os
import sys

BLOCKED = {name for name in os.environ.get("DLRUN_BLOCK", "").split(",") if name}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
