"""Distinct muscle solutions of the tracking controller (`--method track --solutions K`)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from scipy.optimize import lsq_linear
from toy_models import _add_muscle, standing_block

from msconvert.emulator.model import compile_spec, model_spec
from msconvert.emulator.qp import solve_box_qp_lowrank
from msconvert.emulator.retarget.reference import Reference

FEET = {"left": ["foot_l"], "right": ["foot_r"]}


def _random_box_qp(rng: np.random.Generator, n: int = 40, k: int = 9) -> dict:
    """A static-optimization-shaped problem: muscles in [0, 1], contact forces in [0, inf)."""
    return dict(
        at=rng.normal(size=(k, n)),
        rhs=5.0 * rng.normal(size=k),
        winv=np.diag(rng.uniform(0.01, 1.0, k)),
        h=rng.uniform(0.2, 3.0, n),
        lo=np.zeros(n),
        hi=np.where(np.arange(n) < 30, 1.0, np.inf),
        x0=rng.uniform(0.0, 1.0, n),
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_qp_linear_term_matches_a_bounded_least_squares_reference(seed):
    rng = np.random.default_rng(seed)
    p = _random_box_qp(rng)
    linear = rng.normal(scale=2.0, size=p["h"].size)  # both signs: pushes up and down
    x, iterations = solve_box_qp_lowrank(**p, linear=linear)
    assert iterations < 300
    # The same objective as one least-squares problem, solved by scipy's BVLS:
    # ½Σh·x² + linearᵀx = ½‖√h·x + linear/√h‖² + const, ½‖at·x − rhs‖²_W = ½‖Lᵀ(at·x − rhs)‖²
    # with W = L·Lᵀ.
    root_h = np.sqrt(p["h"])
    chol = np.linalg.cholesky(np.linalg.inv(p["winv"]))
    stacked = np.vstack([np.diag(root_h), chol.T @ p["at"]])
    target = np.concatenate([-linear / root_h, chol.T @ p["rhs"]])
    ref = lsq_linear(stacked, target, bounds=(p["lo"], p["hi"]), method="bvls", tol=1e-14)
    np.testing.assert_allclose(x, ref.x, atol=1e-7)
    assert ((x >= p["lo"]) & (x <= p["hi"])).all()
    # the linear term moves the answer: it is not ignored
    plain, _ = solve_box_qp_lowrank(**p)
    assert np.abs(plain - x).max() > 1e-3


def test_a_zero_linear_term_gives_the_plain_answer():
    p = _random_box_qp(np.random.default_rng(7))
    plain, its = solve_box_qp_lowrank(**p)
    zero, its_zero = solve_box_qp_lowrank(**p, linear=np.zeros(p["h"].size))
    np.testing.assert_array_equal(plain, zero)
    assert its == its_zero
