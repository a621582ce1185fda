import subprocess
import sys


def test_dcp_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "dcp", "--help"], capture_output=True, text=True, check=True)
    assert "Usage" in out.stdout
    assert "sf" in out.stdout
