"""Every shipped config composes and resolves (glue: no pipeline runs here)."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, SHARED_DATA, compose


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_experiments_compose(name):
    cfg = compose([f"experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.codec, name


@pytest.mark.parametrize("name", ["sim_tomo", "tooth"])
def test_datasets_compose_to_absolute_paths(name):
    path = Path(compose([f"dataset={name}"]).dataset.path)
    assert path.is_absolute()
    # built-in simulations in the checkout's reference_data/, measured data in ../shared/data
    where = ROOT / "reference_data" if name.startswith("sim_") else SHARED_DATA  # ../shared may be a link
    assert path.resolve().is_relative_to(where.resolve()), (path, where)


def test_default_dataset_follows_the_technique():
    assert compose([]).dataset.name == "sim_tomo"
    assert compose(["technique=tomo"]).dataset.name == "sim_tomo"


def test_single_codec_group_and_tolerance_override():
    cfg = compose(["codec=zfp", "technique.tolerances.recon_error_to_noise.max=1.0",
                   "technique.tolerances.proj_bias_sigma=null"])
    assert list(cfg.codec) == ["zfp"] and cfg.codec.zfp.input_dtype == "float32"
    from lossbound.criteria.tolerance import Tolerances

    tol = Tolerances(OmegaConf.to_container(cfg.technique.tolerances))
    assert tol.as_dict()["recon_error_to_noise"] == {"max": 1.0}
    assert "proj_bias_sigma" not in tol.as_dict()


def test_shipped_slurm_launcher_composes_on_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the SLURM launcher is not installed (pip install 'lossbound[slurm]')")
    from hydra import compose as hydra_compose, initialize_config_dir

    from lossbound.cli.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu"],
                            return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "cpu" and launcher.cpus_per_task == 4 and launcher.array_parallelism == 16


def test_search_group_defaults_to_bisect():
    cfg = compose([])
    assert cfg.search.strategy == "bisect" and cfg.search.resolution == pytest.approx(2 ** 0.5)
    assert compose(["search=grid"]).search.strategy == "grid"
