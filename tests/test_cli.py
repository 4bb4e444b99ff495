import subprocess
import sys

from PIL import Image
from typer.testing import CliRunner

from genaug.cli import app

runner = CliRunner()


def test_help_is_instant_and_imports_no_heavy_library():
    code = ("import sys, time; t = time.time(); from genaug.cli import app; "
            "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'accelerate', 'matplotlib') if m in sys.modules]; "
            "print(heavy, time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, seconds = out.rsplit(" ", 1)
    assert heavy == "[]" and float(seconds) < 2.0


def test_data_scenes_writes_a_paired_folder(tmp_path):
    result = runner.invoke(app, ["data", "scenes", str(tmp_path / "pairs"), "--n", "3", "--width", "80", "--height", "64"])
    assert result.exit_code == 0, result.output
    rgb = sorted(p.name for p in (tmp_path / "pairs" / "rgb").iterdir())
    thermal = sorted(p.name for p in (tmp_path / "pairs" / "thermal").iterdir())
    assert rgb == thermal and len(rgb) == 3
    assert Image.open(tmp_path / "pairs" / "thermal" / rgb[0]).mode == "L"
    assert Image.open(tmp_path / "pairs" / "rgb" / rgb[0]).size == (80, 64)


def test_report_of_a_directory_that_is_no_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "plan.json" in result.output and "Traceback" not in result.output


def test_ci_runs_the_readme_test_command():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text().splitlines()
    command = next(line for line in readme if line.startswith("python3 -m venv") and "pytest" in line)
    assert command in (root / ".ci" / "run").read_text().splitlines()
