"""The README's Python examples run as written, and its commands are the ones CI and users run."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(_blocks("python"))))
def test_readme_python_blocks_run(i):
    code = _blocks("python")[i]
    exec(compile(code, f"README.md python block {i}", "exec"), {})


def test_readme_commands():
    bash = _blocks("bash")
    assert 'pip install -e ".[dev]" && geoflow train volcano' in bash[0]
    text = README.read_text()
    after = text.split("<!-- test-command -->", 1)[1]
    assert 'pip install -e ".[dev]" && python -m pytest -q' in after.split("```", 2)[1]
