"""An unexpected crash prints a traceback without local variables: no secret leaks through it."""

import json
import os
import subprocess
import sys

SECRET = "hunter2-s3cr3t-token"


def test_crash_traceback_shows_no_locals(tmp_path):
    run = tmp_path / "run-20260101-000000"
    run.mkdir()
    meta = {"status": "completed", "command": ["dlrun", "train", f"--api-key={SECRET}"]}
    (run / "meta.json").write_text(json.dumps(meta))
    (run / "config.yaml").mkdir()  # a directory where a file belongs: reading it crashes
    env = {**os.environ, "DLRUN_TEST_TOKEN": SECRET, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "dlrun", "show", str(run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "IsADirectoryError" in result.stderr  # the crash is real and reported
    assert SECRET not in result.stdout + result.stderr
