"""A tampered or odd LLPR file is refused naming the file and the field, instead of giving NaN
or scaled uncertainties, or a KeyError."""

import numpy as np
import pytest

from mdmonitor import LastLayerLPR


@pytest.fixture(scope="module")
def stored(models):
    return dict(np.load(models["llpr"]))


def written(tmp_path, arrays):
    path = tmp_path / "llpr.npz"
    np.savez(path, **arrays)
    return path


def with_nan_entry(hessian):
    hessian = hessian.copy()
    hessian[4, 7] = hessian[7, 4] = np.nan
    return hessian


def asymmetric(hessian):
    hessian = hessian.copy()
    hessian[0, 1] += 1.0
    return hessian


@pytest.mark.parametrize("field, value, message", [
    ("scale", 0.0, "scale must be a positive number, got 0.0"),
    ("scale", -2.0, "scale must be a positive number, got -2.0"),
    ("scale", np.nan, "scale must be a positive number, got nan"),
    ("scale", np.array([1.0, 2.0]), r"scale must be one value, got shape \(2,\)"),
    ("regularizer", np.inf, r"regularizer must be a positive number \(eV\^2\), got inf"),
    ("force_weight", -1.0, "force_weight must be a non-negative number, got -1.0"),
    ("n_structures", -5, "n_structures must be a non-negative integer, got -5"),
    ("hessian", with_nan_entry, (r"hessian \(the Gauss-Newton matrix\) must be finite, but "
                                 r"row 4 has nan in column 7")),
    ("hessian", asymmetric, r"hessian \(the Gauss-Newton matrix\) must be symmetric"),
])
def test_a_bad_field_is_refused_naming_file_and_field(models, stored, tmp_path, field, value,
                                                      message):
    path = written(tmp_path, stored)
    assert LastLayerLPR.load(path, model=models["committee"][0]).n_structures == 156
    value = value(stored[field]) if callable(value) else value
    path = written(tmp_path, {**stored, field: value})
    with pytest.raises(ValueError, match=rf"LLPR file '{path}': {message}; fit it again"):
        LastLayerLPR.load(path, model=models["committee"][0])


@pytest.mark.parametrize("missing", ["hessian", "scale", "n_structures"])
def test_a_missing_field_is_named(models, stored, tmp_path, missing):
    path = written(tmp_path, {k: v for k, v in stored.items() if k != missing})
    with pytest.raises(ValueError, match=f"LLPR file '{path}' lacks {missing}; fit it again"):
        LastLayerLPR.load(path, model=models["committee"][0])


@pytest.mark.parametrize("missing", ["model_file", "model_sha256", "head"])
def test_a_missing_model_reference_is_named_not_a_key_error(models, stored, tmp_path, missing):
    path = written(tmp_path, {k: v for k, v in stored.items() if k != missing})
    with pytest.raises(ValueError, match=f"LLPR file '{path}' lacks the field.* {missing} that "
                                         "name its model; fit it again"):
        LastLayerLPR.load(path, model=models["committee"][0])
