"""Input statistics fit once and kept for later stages: a feature the fitting data never
exercises keeps unit scale, checked against a numpy computation."""

import numpy as np

from cpd_jax.student import task_embedding
from cpd_jax.student.inputs import fit_obs_norm
from tests.helpers import numpy_feature_scale


def test_obs_norm_keeps_unit_scale_for_features_the_data_never_exercises():
    rng = np.random.default_rng(0)
    obs = np.zeros((200, 39), np.float32)
    obs[:, :3] = rng.normal(0.5, 0.05, (200, 3))  # varies
    obs[:, 3] = 0.2 + rng.normal(0, 1e-4, 200)  # varies less than the floor
    obs[:, 36:] = 0.7  # constant, non-zero
    norm = fit_obs_norm(obs)
    np.testing.assert_allclose(norm.mean, obs.mean(0), atol=1e-5)
    np.testing.assert_allclose(norm.std, numpy_feature_scale(obs, 1e-2), rtol=1e-5)
    assert norm.std[3] == np.float32(1e-2) and norm.std[11] == 1.0 and norm.std[36] == 1.0
    # a later task's second object (zero in every fitting observation) enters unscaled
    later = np.zeros(39, np.float32)
    later[11] = 0.6
    assert float(((later - norm.mean) / norm.std)[11]) == np.float32(0.6)


def test_encoder_input_statistics_use_the_same_rule():
    rng = np.random.default_rng(1)
    obs = np.zeros((6, 8, 39), np.float32)
    obs[..., :4] = rng.normal(0.0, 0.1, (6, 8, 4))
    windows = task_embedding.Windows(
        obs=obs, actions=rng.normal(0, 1, (6, 8, 4)).astype(np.float32),
        rewards=np.zeros((6, 8), np.float32), valid=np.ones((6, 8), bool))
    mean, std = task_embedding.input_statistics(windows, min_std=1e-3)
    x = np.asarray(task_embedding.step_features(windows.obs, windows.actions,
                                                windows.rewards)).reshape(-1, 44)
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, numpy_feature_scale(x, 1e-3), rtol=1e-5)
    assert std[11] == 1.0  # a padded obs feature: unit scale, not x1000
