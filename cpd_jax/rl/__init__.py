"""Reinforcement learning that trains the teachers: PPO (`cpd_jax.rl.ppo`) on functional
envs (`cpd_jax.envs.functional.Env`).

Imports flow envs -> rl -> teachers: nothing here imports `cpd_jax.teachers`; the loaded
teacher (`cpd_jax.teachers.ppo_teacher`) imports only `rl.ppo.networks`, `.normalizer`
and `.export`.
"""
