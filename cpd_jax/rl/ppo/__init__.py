"""PPO teachers, laid out as brax's `training/agents/ppo`:

* `losses`: GAE, garage's linear feature baseline, the clipped PPO loss;
* `networks`: the policy (`make_policy`, used by training and by a loaded teacher) and
  the MLP critic, the tanh-Gaussian log-density;
* `normalizer`: the running observation normaliser;
* `train`: `TrainState`, `make_ppo` (the pure pieces), `Loops` (the training
  orchestration over them; its drivers: the scanned `train_chunk` and `make_host_chunk`),
  `make_train`, and many tasks vmapped and sharded (`make_multi_task_train`);
* `runner`: the impure driver of a teachers job (env groups, chunked training with
  checkpoint/resume, teacher export, learning curves, success table);
* `export`: the on-disk format of a trained teacher (`save_teacher`).

This package imports none of its modules, so loading a teacher (`networks`,
`normalizer`, `export`) never imports the training code (`train`, `runner`).
"""
