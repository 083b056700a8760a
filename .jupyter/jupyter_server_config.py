# JupyterLab's settings for this project (`make lab` puts this folder on JUPYTER_CONFIG_PATH).
# Checkpoints go to build/, not to a .ipynb_checkpoints folder beside the notebooks: running a notebook in Lab
# writes nothing under notebooks/ (an absolute checkpoint_dir is used as it is).
from pathlib import Path

c = get_config()  # noqa: F821 (traitlets provides it)
c.FileCheckpoints.checkpoint_dir = str(Path(__file__).resolve().parents[1] / "build" / "lab-checkpoints")
