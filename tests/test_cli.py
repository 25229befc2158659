"""The command line and the config files: locked configs name a misspelt field; bad tasks
are named; every file in cpd_jax/configs passes the up-front checks; paper defaults."""

import importlib
import pathlib
import subprocess
import sys

import pytest

from cpd_jax import config_checks
from cpd_jax import configs as configs_package
from cpd_jax.envs.tasks import MT10_TASKS, MT25_TASKS


def _run_main(*args):
    return subprocess.run([sys.executable, "-m", "cpd_jax.main",
                           "--config=cpd_jax/configs/quickstart.py", *args],
                          capture_output=True, text=True, timeout=300)


def test_misspelt_config_field_is_named():
    out = _run_main("--workdir=/tmp/unused", "--config.distill.batchsize=3")
    assert out.returncode != 0
    assert "batchsize" in out.stderr


def test_unknown_task_is_named(tmp_path):
    out = _run_main(f"--workdir={tmp_path}", "--config.tasks=('reach-v3','fly-v3')")
    assert out.returncode != 0
    assert "fly-v3" in out.stderr and "reach-v3" in out.stderr


CONFIG_DIR = pathlib.Path(configs_package.__file__).parent
CONFIG_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")
# Configs at the paper's sizes (Table 6): the CPU-sized ones shrink the student on purpose.
PAPER_SIZED = ("default", "mt10_joint", "mt25_2stage", "mt25_5stage")
TABLE6_STUDENT = {"dim": 256, "num_blocks": 5, "num_experts": 8, "mlp_multiplier": 4,
                  "seq_len": 20, "top_k": 1}
TABLE6_DISTILL = {"batch_size": 128, "learning_rate": 1e-4, "epochs": 2.0}
# PPO teachers (Table 4).
TABLE4_PPO = {"total_env_steps": 10_000_000, "eval_every_steps": 100_000, "gamma": 0.99,
              "gae_lambda": 0.97, "num_epochs": 20, "num_minibatches": 64,
              "learning_rate": 5e-5, "max_grad_norm": 1.0, "early_stop_success": 0.98}


def load_config(name: str):
    return importlib.import_module(f"cpd_jax.configs.{name}").get_config()


def test_config_directory_is_found():
    assert {"default", "quickstart", "continual_quickstart", "teachers_ppo"} <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_file_passes_the_up_front_checks(name):
    config = load_config(name)
    config_checks.check_config(config)  # raises UserError naming the field
    assert config.protocol in config_checks.PROTOCOLS


@pytest.mark.parametrize("name", PAPER_SIZED)
def test_paper_sized_configs_have_table6_defaults(name):
    config = load_config(name)
    assert {k: config.student[k] for k in TABLE6_STUDENT} == TABLE6_STUDENT
    assert {k: config.distill[k] for k in TABLE6_DISTILL} == TABLE6_DISTILL
    assert config.teacher.kind == "scripted" and config.env.backend == "reference"


def test_paper_task_streams():
    assert load_config("mt10_joint").tasks == MT10_TASKS
    for name, sizes in (("mt25_5stage", (5, 5, 5, 5, 5)), ("mt25_2stage", (10, 15))):
        config = load_config(name)
        assert (config.tasks, config.protocol) == (MT25_TASKS, "stages")
        assert tuple(config.continual.stage_sizes) == sizes
    assert load_config("mt25_5stage").student.task_context == "contrastive"  # §4.3


def test_ppo_teachers_config_has_table4_defaults():
    ppo = load_config("teachers_ppo").ppo
    assert {k: ppo[k] for k in TABLE4_PPO} == TABLE4_PPO
    assert ppo.num_envs * ppo.unroll_length == 20_000  # env steps per update
