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


def trained(base: Path) -> Path:
    """A base holding every file the export copies: small stand-ins of the right formats."""
    import torch

    from nodes.demo.export import COPIED, HALVED
    from nodes.infra.files import save_safetensors

    for folder, name in HALVED:
        save_safetensors({"w": torch.ones(2)}, base / "models" / folder / name)
    for folder, name in COPIED:
        (base / "models" / folder / name).mkdir(parents=True)
        (base / "models" / folder / name / "config.json").write_text("{}")
    return base


def test_a_corrupt_trained_file_is_named_and_nothing_is_written(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The LoRA comes second: the checkpoint must not be exported beside the target's old LoRA."""
    base = trained(tmp_path / "run")
    (base / "models" / "loras" / "nodeloom-demo-slam.safetensors").write_bytes(b"\x08")
    assert main([str(base), "--target", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "nodeloom-demo-slam.safetensors" in err and "corrupt" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_runs_own_models_folder_as_target_is_refused_and_kept(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Copying the scorer folder onto itself deleted it before copying."""
    base = trained(tmp_path / "run")
    assert main([str(base), "--target", str(base / "models")]) == 1
    assert "the training run's own models folder" in capsys.readouterr().err
    assert (base / "models" / "scorers" / "nodeloom-demo-clip" / "config.json").is_file()


def test_a_trained_base_is_exported_in_fp16(tmp_path: Path) -> None:
    from nodes.infra.files import read_state_dict

    base = trained(tmp_path / "run")
    assert main([str(base), "--target", str(tmp_path / "out")]) == 0
    state, _ = read_state_dict(tmp_path / "out" / "checkpoints" / "nodeloom-demo.safetensors")
    assert str(state["w"].dtype) == "torch.float16"
    assert (tmp_path / "out" / "clip_tokenizer" / "nodeloom-demo-clip" / "config.json").is_file()
