"""Every case of the bad-input sweep (tests/bad_input_cases.py) ends with exit code 2 and one message that names
the problem: no traceback, no usage text, no config dump, and no run directory left behind."""

from __future__ import annotations

import pytest
from bad_input_cases import CASES, RAN, first_line, prepare, resolve, run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    prepare(tmp)
    return tmp


@pytest.mark.parametrize("name, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(name, args, expected, prepared):
    root = prepared / f"runs_{abs(hash(name))}"
    code, stderr = run(resolve(args, prepared), root)
    assert code == 2, f"{name}: exit {code}\n{stderr[-2000:]}"
    assert "Traceback" not in stderr and "Namespace(" not in stderr and "usage:" not in stderr, f"{name}\n{stderr}"
    assert expected in first_line(stderr), f"{name}: {first_line(stderr)}"
    assert len([line for line in stderr.splitlines() if line.startswith("error")]) == 1, f"{name}\n{stderr}"
    if name not in RAN:
        leftover = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        assert not leftover, f"{name} left {leftover}"
