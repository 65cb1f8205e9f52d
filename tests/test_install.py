"""What a plain install gives every user: the compiled env and simulator steps (numba is a core dependency,
not an extra a newcomer skips), with the pure-numpy path still there and tested equal (test_speed_paths)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from packaging.requirements import Requirement

import sim.kernel


def test_numba_is_a_core_dependency_not_an_extra() -> None:
    core = [Requirement(text) for text in importlib.metadata.requires("trading-rl") or []]
    numba = [r for r in core if r.name == "numba"]
    assert numba and all(r.marker is None for r in numba), "numba must install without any extra"


def test_the_compiled_step_is_on_in_a_default_install_and_off_with_the_switch() -> None:
    assert sim.kernel.step_kernel is not None
    code = "import sim.kernel, envs.kernel; print(sim.kernel.step_kernel, envs.kernel.env_step_kernel)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"TRADING_RL_NO_NUMBA": "1", "PATH": ""}, cwd=sim.kernel.__file__.rsplit("/sim/", 1)[0])
    assert out.stdout.split() == ["None", "None"]
