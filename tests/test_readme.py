"""The README's code must run as written."""

import pathlib
import re

from test_likelihood_training import MARKER

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python block"
    namespace = {}  # the tour continues from block to block
    for block in blocks:
        if block.startswith(MARKER):  # tests/test_likelihood_training.py runs it
            continue
        exec(compile(block, str(README), "exec"), namespace)


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    for marker in ("# 1. install and run the main job\n", "# 2. install and run the tests\n"):
        assert marker in text
        assert text.split(marker, 1)[1].startswith("pip install -e ")
