"""``python -m nodes.demo.export``: a base the training workflow did not write is named, without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.demo.export import main


def test_a_base_without_the_trained_models_is_an_error_naming_them(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "models" / "loras").mkdir(parents=True)
    assert main([str(tmp_path), "--target", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not written by the training run" in err and "nodeloom-demo-slam.safetensors" in err
    assert "Traceback" not in err and "workflows/train_demo.json" in err
    assert not (tmp_path / "out").exists()  # nothing half-written
