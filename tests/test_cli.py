"""The `relex-jax` command line."""

import pytest

from relex_jax import cli


def test_selfcheck_passes_and_reports(capsys):
    assert cli.main(["selfcheck", "--batch", "3", "--seq-len", "24"]) == 0
    out = capsys.readouterr().out
    assert "scan vs plain" in out and "remat vs plain" in out
    assert out.strip().endswith("selfcheck: OK")


def test_selfcheck_rejects_empty_batch():
    with pytest.raises(SystemExit) as exc:
        cli.main(["selfcheck", "--batch", "0"])
    assert exc.value.code == 2
