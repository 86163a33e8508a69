"""The wheel carries the shipped checkpoints (models/*.safetensors) as coun_tui/models, so the lab
installed as a tool (`pipx install .`, or the built wheel) opens on its default model. They stay in
models/ in the source tree; engine/paths.py finds them in either place."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildPyWithModels(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads models/ in place
            return
        target = Path(self.build_lib) / "coun_tui" / "models"
        target.mkdir(parents=True, exist_ok=True)
        for source in [*sorted((ROOT / "models").glob("*.safetensors")), ROOT / "models" / "README.md"]:
            self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithModels})
