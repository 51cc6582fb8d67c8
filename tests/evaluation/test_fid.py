"""FID: the Fréchet distance matches the scipy sqrtm formula; a set against itself is ~0; rows get
the FID of their value's group; missing or wrong Inception weights are named; and (slow) the whole
node runs on a random-weight Inception v3 in torch-fidelity's published layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from graph_runtime import HookContext
from graph_runtime.folders import FolderPaths
from graph_runtime.validation import validate
from nodes.evaluation import fid as fid_module
from nodes.evaluation.fid import FID, INCEPTION_FILE, frechet_distance
from nodes.evaluation.rows import EvalRow
from nodes.infra.files import ModelFileError


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_frechet_distance_matches_scipy_sqrtm_to_1e6_relative() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24))
    b = rng.normal(0.3, 1.5, size=(200, 24)) @ rng.normal(size=(24, 24))
    expected = _scipy_fid(a, b)
    got = frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert expected > 1.0 and abs(got - expected) <= 1e-6 * expected


def test_a_feature_set_against_itself_is_zero() -> None:
    features = torch.randn(64, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(frechet_distance(features, features)) < 1e-8
    with pytest.raises(ValueError, match="at least 2 images in each set; got 1 reference"):
        frechet_distance(features[:1], features)


def _workflow() -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 2, "color": 0}},
            "2": {"class_type": "FID", "inputs": {"images": ["1", 0], "reference": ["1", 0],
                                                   "inception": INCEPTION_FILE, "resize": "antialiased"}},
            "3": {"class_type": "MetricsTable", "inputs": {"rows": ["2", 1], "filename_prefix": "m",
                                                           "x_metric": "", "y_metric": "fid"}}}


def test_missing_inception_weights_are_a_validation_error_naming_file_and_folder(eval_runtime, tmp_path) -> None:
    folders = FolderPaths(base=tmp_path)
    result = validate(_workflow(), eval_runtime.registry, ctx=HookContext(folders))
    [error] = [e for e in result.node_errors if e.node_id == "2"]
    assert error.type == "custom_validation_failed"
    assert INCEPTION_FILE in error.details and "'inception' models folder" in error.details
    assert str(tmp_path / "models" / "inception") in error.details


def test_the_zoo_weights_pass_validation(eval_runtime) -> None:
    assert eval_runtime.validate(_workflow()).ok


def test_a_file_in_another_layout_is_an_error_naming_it(tmp_path) -> None:
    path = tmp_path / "inception" / "not-inception.pth"
    path.parent.mkdir()
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelFileError, match="not-inception.pth: not torch-fidelity's Inception v3 weights"):
        fid_module.inception_ref(path).loader()


def test_rows_get_the_fid_of_their_value_group(make_ctx, monkeypatch) -> None:
    # features = the images' pixels: the grouping is checked without running Inception
    monkeypatch.setattr(fid_module, "inception_ref", lambda path: None)
    monkeypatch.setattr(fid_module, "inception_features",
                        lambda manager, ref, images, resize, progress: torch.cat([i.reshape(len(i), -1) for i in images]).double())
    gen = torch.Generator().manual_seed(0)
    reference = [torch.rand(3, 2, 2, 3, generator=gen)]
    images = [torch.rand(1, 2, 2, 3, generator=gen) for _ in range(4)]
    rows = [EvalRow(index=i, prompt=p, seed=i, sweep="cfg", value=v) for i, (v, p) in
            enumerate([(1.0, "a"), (1.0, "b"), (2.0, "a"), (2.0, "b")])]
    overall, scored = FID().run(make_ctx(), images=images, reference=reference, inception=[INCEPTION_FILE],
                                resize=["antialiased"], rows=rows)
    flat = lambda batches: torch.cat([b.reshape(len(b), -1) for b in batches]).double()  # noqa: E731
    assert overall == pytest.approx(frechet_distance(flat(reference), flat(images)))
    first, second = frechet_distance(flat(reference), flat(images[:2])), frechet_distance(flat(reference), flat(images[2:]))
    assert [r.metrics["fid"] for r in scored] == pytest.approx([first, first, second, second])
    assert first != pytest.approx(second)
    with pytest.raises(ValueError, match="rows: 3 rows for 4 image batches"):
        FID().run(make_ctx(), images=images, reference=reference, inception=[INCEPTION_FILE],
                  resize=["antialiased"], rows=rows[:3])


@pytest.mark.parametrize(("reference", "images", "message"), [
    ([], [torch.zeros(2, 8, 8, 3)], "reference: 0 images arrived; FID needs at least 2"),
    ([torch.zeros(2, 8, 8, 3)], [torch.zeros(1, 8, 8, 3)], "images: 1 image arrived; FID needs at least 2"),
])
def test_a_set_of_fewer_than_two_images_is_named_before_inception_runs(make_ctx, monkeypatch, reference, images,
                                                                       message) -> None:
    # a prompt set without reference images gave FID an empty list: a bare "torch.cat(): expected a non-empty list"
    monkeypatch.setattr(fid_module, "inception_ref", lambda path: pytest.fail("Inception loaded"))
    with pytest.raises(ValueError, match=message):
        FID().run(make_ctx(), images=images, reference=reference, inception=[INCEPTION_FILE], resize=["antialiased"])


@pytest.mark.slow
def test_fid_end_to_end_on_a_random_inception_in_the_published_layout(make_ctx, tmp_path: Path) -> None:
    from nodes.diffusion.zoo.inception import FILE, random_inception, save_inception

    path = save_inception(tmp_path, seed=3)
    assert path.name == FILE == INCEPTION_FILE
    published = set(random_inception(3).state_dict())
    assert set(torch.load(path, weights_only=True)) == published  # torch-fidelity's own keys
    gen = torch.Generator().manual_seed(0)
    ours = torch.rand(2, 48, 40, 3, generator=gen)
    other = torch.rand(2, 48, 40, 3, generator=gen) * 0.3
    from nodes.infra.model_manager import manager_from

    manager, ref = manager_from(make_ctx().services), fid_module.inception_ref(path)
    same = fid_module.inception_features(manager, ref, [ours], resize="tensorflow")
    assert same.shape == (2, 2048) and same.std() > 1e-2  # features of order one, not vanished
    assert abs(frechet_distance(same, same)) < 1e-6 * float((same ** 2).sum())
    distinct = frechet_distance(same, fid_module.inception_features(manager, ref, [other], resize="tensorflow"))
    assert distinct > 1e-3 * float((same ** 2).sum())
