"""The user's own Python: the one owner of importing a spec's code files and deciding trust.

A spec's `code: [layers.py, ...]` names Python files (relative to the spec file). `importing`
reads each as a bounded regular file and imports it as a module under its file's stem, before
anything is built; `names` finds the classes and functions they define for the model, the
compile settings, the callbacks and the data (a name both Keras and a code file define, or two
code files, must be written `module.Name`); `trust` remembers the hashes of the code this user
trained with, and refuses a run's code that it does not know, importing nothing.

Imports spec/ and store/ only (no Keras: the code files import what they need); model/, data/
and everything above use it.
"""

from dlrun.usercode.importing import (
    CODE_FOLDER,
    active,
    add_base_code,
    check_run,
    check_trusted,
    code_paths,
    copy_into_run,
    digests,
    read_files,
    use_run,
    use_spec,
)
from dlrun.usercode.names import Ambiguous, call_function, custom_objects, find, merged
from dlrun.usercode.trust import remember, set_trust_given

__all__ = [
    "CODE_FOLDER",
    "Ambiguous",
    "active",
    "add_base_code",
    "check_run",
    "check_trusted",
    "call_function",
    "code_paths",
    "copy_into_run",
    "custom_objects",
    "digests",
    "find",
    "merged",
    "read_files",
    "remember",
    "set_trust_given",
    "use_run",
    "use_spec",
]
