"""conf/, recipes/ and the tiny model travel inside a non-editable wheel."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("hatchling")
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(folder / "dist"), str(ROOT)], check=True)
    wheel = next((folder / "dist").glob("grpo-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder / "site"),
                    str(wheel)], check=True)
    return folder


def grpo(installed, *args):
    env = {**os.environ, "PYTHONPATH": str(installed / "site")}
    return subprocess.run([sys.executable, "-m", "grpo_cli", *args], capture_output=True, text=True,
                          cwd=installed, env=env)


def test_recipe_composes_from_the_wheel(installed):
    out = grpo(installed, "train", "+recipe=dapo_math", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "clip_eps_high: 0.28" in out.stdout


def test_one_step_trains_from_the_wheel(installed):
    out = grpo(installed, "train", "trainer.steps=1", "eval.num_prompts=4", "output_dir=run")
    assert out.returncode == 0, out.stderr
    assert (installed / "run" / "checkpoints" / "step_1" / "model.safetensors").is_file()
    probe = subprocess.run([sys.executable, "-c", "import grpo_cli; print(grpo_cli.__file__)"], capture_output=True,
                           text=True, cwd=installed, env={**os.environ, "PYTHONPATH": str(installed / "site")},
                           check=True)
    assert probe.stdout.startswith(str(installed / "site"))
