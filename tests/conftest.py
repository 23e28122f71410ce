"Shared fixtures: a throw-away agora repo holding the toy fixture paper, and a runner for the `agora` command."
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# before anything imports torch: OpenMP threads wait passively (spinning threads collapse on a loaded machine)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

FIXTURE = Path(__file__).parent / "fixtures" / "toy"
AGORA = str(Path(sys.executable).parent / "agora")


def add_paper(root: Path, slug: str = "toy", extra_notebooks: tuple[str, ...] = ()) -> None:
    "Copy the toy fixture paper into `root` under `slug` (notebooks, card, cpu profile)."
    nbs, card = root / "nbs" / "papers" / slug, root / "papers" / slug
    (card / "profiles").mkdir(parents=True)
    nbs.mkdir(parents=True)
    for nb in FIXTURE.glob("*.ipynb"):
        shutil.copy(nb, nbs / nb.name)
    text = (FIXTURE / "paper.yaml").read_text()
    if extra_notebooks:
        text = text.replace("  - 90_figures.ipynb", "".join(f"  - {n}\n" for n in extra_notebooks) + "  - 90_figures.ipynb")
    (card / "paper.yaml").write_text(text)
    shutil.copy(FIXTURE / "cpu.yaml", card / "profiles" / "cpu.yaml")


@pytest.fixture(scope="module")
def one_thread():
    "Torch on one thread for a module of tiny-model tests (faster, and steady on a shared machine)."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smol():
    "SmolLM2-135M-Instruct, loaded once per test session (its package is installed by `make install`)."
    from agora.core.lm import install_hint, load_chat_model
    try: return load_chat_model("smollm2-135m-instruct", device="cpu")
    except ModuleNotFoundError:
        pytest.fail(f"SmolLM2 is not installed: {install_hint('smollm2-135m-instruct')} (make install does it)")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    "An empty agora repo (settings.ini only) in a temporary directory."
    (tmp_path / "settings.ini").write_text((Path(__file__).parents[1] / "settings.ini").read_text())
    return tmp_path


@pytest.fixture
def toy_repo(repo: Path) -> Path:
    "A repo holding the toy fixture paper."
    add_paper(repo)
    return repo


def agora(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    "Run the `agora` command with `root` as the repo root."
    env = {**os.environ, "AGORA_ROOT": str(root)}
    return subprocess.run([AGORA, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=root)
