"""The command line reports a bad environment or argument in one line, exit status 2."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, **env):
    full = dict(os.environ, PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-m", "npattention", *args], env=full, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("env,name", [({"NPATTENTION_BACKEND": "bogus"}, "NPATTENTION_BACKEND"),
                                      ({"NPATTENTION_DETECT_ANOMALY": "maybe"}, "NPATTENTION_DETECT_ANOMALY")])
def test_bad_environment_is_one_line_and_status_2(env, name):
    r = cli("gradcheck", "--list", **env)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("python -m npattention: error: ") and name in r.stderr


def test_library_import_still_raises_for_a_bad_backend():
    code = "import npattention"
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT, NPATTENTION_BACKEND="bogus"),
                       capture_output=True, text=True)
    assert r.returncode == 1 and "BackendError: NPATTENTION_BACKEND must be 'numpy', 'cupy' or 'auto'" in r.stderr


@pytest.mark.parametrize("args,option", [(("transformer", "--epochs", "0"), "--epochs"),
                                         (("seq2seq", "--epochs", "-3"), "--epochs"),
                                         (("stn", "--lr", "-1"), "--lr"),
                                         (("vision", "--n-train", "abc"), "--n-train")])
def test_bad_demo_numbers_are_argument_errors(args, option):
    r = cli("demo", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: argument {option}: expected a" in r.stderr.strip().splitlines()[-1]
