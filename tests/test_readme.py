"""The README's promises stay true: its Python example runs, and its two quickstart
commands are the ones CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert "overall: PASS" in capsys.readouterr().out


def test_ci_runs_the_readme_test_command():
    bash_lines = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_command = next(line for block in bash_lines for line in block.splitlines() if line.endswith("pytest"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
