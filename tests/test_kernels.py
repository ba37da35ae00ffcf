"""models.kernels: per-pixel Gaussian targets, LR sites, mean kernels and PCA against numpy float64."""

import numpy as np
import pytest
import torch

from bsrdata.errors import BsrError
from bsrdata.models import kernels as K
from bsrdata.render import gaussian_kernel_1d


def _np_gauss2d(sigma, size):
    r = size // 2
    if sigma == 0:
        g = np.zeros((size, size))
        g[r, r] = 1
        return g
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return g / g.sum()


@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.0, 2.5, 5.0, 15.0])
def test_gaussian_kernels_match_numpy_and_renderer(sigma):
    k = K.gaussian_kernels(torch.tensor([sigma], dtype=torch.float64), 21)[0].numpy()
    np.testing.assert_allclose(k, _np_gauss2d(sigma, 21), rtol=0, atol=1e-15)
    g = gaussian_kernel_1d(sigma, 21)
    np.testing.assert_allclose(k, np.outer(g, g), rtol=0, atol=1e-15)
    assert abs(k.sum() - 1) < 1e-12


def test_lr_sites_direct_and_bicubic():
    m = torch.arange(8 * 12, dtype=torch.float64).reshape(1, 8, 12)
    d = K.lr_sites(m, 4)
    assert d.shape == (1, 2, 3) and d[0, 1, 2] == m[0, 4, 8]
    b = K.lr_sites(m, 4, "bicubic")
    assert b[0, 1, 2] == m[0, 4:8, 8:12].mean()
    with pytest.raises(BsrError, match="downsample"):
        K.lr_sites(m, 4, "nearest")


def test_mean_kernel_equals_direct_average():
    rng = np.random.default_rng(0)
    s = np.round(rng.uniform(0, 5, (2, 6, 7)) / 0.025) * 0.025
    s[1] = 2.0  # invariant image: exactly G_2
    mk = K.mean_kernel(torch.from_numpy(s), 21).numpy()
    ref0 = np.mean([_np_gauss2d(v, 21) for v in s[0].ravel()], axis=0)
    np.testing.assert_allclose(mk[0], ref0, atol=1e-14)
    np.testing.assert_allclose(mk[1], _np_gauss2d(2.0, 21), atol=1e-14)
    mask = torch.zeros(2, 6, 7, dtype=torch.bool)
    mask[0, 0, 0] = True
    mm = K.mean_kernel(torch.from_numpy(s), 21, mask).numpy()
    np.testing.assert_allclose(mm[0], _np_gauss2d(s[0, 0, 0], 21), atol=1e-14)
    assert mm[1][10, 10] == 1.0  # no pixel: a delta


def test_pca_basis_orthonormal_and_reconstructs_gaussians():
    b = K.gaussian_pca_basis(5.0, 21, 15)
    assert b.shape == (441, 15)
    np.testing.assert_allclose((b.T @ b).numpy(), np.eye(15), atol=1e-10)
    # numpy reference of the same recipe (centred SVD) spans the same subspace
    s = np.linspace(0, 5, 2000)
    x = np.stack([_np_gauss2d(v, 21).ravel() for v in s])
    u = np.linalg.svd((x - x.mean(0)).T, full_matrices=False)[0][:, :15]
    np.testing.assert_allclose(np.abs(u.T @ b.numpy()).sum(1), np.ones(15), atol=1e-6)
    k = K.gaussian_kernels(torch.tensor([1.7], dtype=torch.float64), 21)
    code = K.project(k, b)
    rec = (code @ b.T).reshape(21, 21)
    # without the mean the part of k along the fitted mean is lost; with it the 15 components suffice
    assert 0.05 < float((rec - k[0]).norm() / k[0].norm()) < 0.5
    mean = torch.from_numpy(x.mean(0))
    rec_c = mean + ((k[0].reshape(-1) - mean) @ b) @ b.T
    assert float((rec_c - k[0].reshape(-1)).norm() / k[0].norm()) < 1e-2
    with pytest.raises(BsrError, match="taps"):
        K.project(torch.zeros(3, 5, 5), b)
