"""The report on tiny workdirs: every figure it claims is written; what it cannot draw is named."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import tiny_config
from scaling.quanta import msp, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  base = tmp_path_factory.mktemp("report")
  train = dict(steps=1500, log_every=50, batch_size=256)
  n_sweep = tiny_config(train=train, sweep=dict(width=(16, 32, 64), alpha=(0.3, 0.6), lr=(3e-3,)))
  d_sweep = tiny_config(train=train, sweep=dict(width=(64,), D=(128, 512, 2048, 8192), alpha=(0.3, 0.6),
                                                lr=(3e-3,)))
  out = []
  for name, c in (("n", n_sweep), ("d", d_sweep)):
    msp.run(c, str(base / name))
    out.append(str(base / name))
  return out


def _claimed(text: str) -> list[str]:
  return [f for line in text.splitlines() if line.startswith("figures: ") for f in re.findall(r"fig\d+\.png", line)]


def test_report_writes_what_it_claims(workdirs):
  text = report.report(workdirs)
  n_dir, d_dir = workdirs
  blocks = text.split("== ")[1:]
  assert len(blocks) == 2
  for wd, block in zip(workdirs, blocks):
    claimed = _claimed(block)
    assert claimed, block
    for f in claimed:
      for ext in (".png", ".pdf"):
        path = os.path.join(wd, f.replace(".png", ext))
        assert os.path.getsize(path) > 5000, path
  # Fig 9/10 merge the fits of all workdirs (α_N, α_S from the N sweep, α_D, n_learned(D) from the D sweep).
  assert set(_claimed(blocks[0])) == {"fig2.png", "fig7.png", "fig8.png", "fig9.png", "fig10.png"}
  assert set(_claimed(blocks[1])) == {"fig2.png", "fig7.png", "fig9.png", "fig10.png"}
  assert "Fig 8 needs an online run" in blocks[1] and "N- and S-scaling" in blocks[1]  # D sweep only
  for q in ("α_N, α=0.3", "α_N, α=0.6", "α_S (500<S<15k), α=0.3"):
    assert q in blocks[0]
  assert "α_D, α=0.3" in blocks[1] and "n_learned(D) exp., α=0.6" in blocks[1]
  assert "n/a*" in text  # the tiny task is not the paper's: paper values are not scored


def test_fits_have_errors_and_rows_are_consistent(workdirs):
  run = report.analyze(workdirs[0])
  for q in ("alpha_N", "alpha_S"):
    for alpha, fit in run.fits[q].items():
      assert np.isfinite(fit.exponent) and fit.stderr > 0, (q, alpha, fit)
  rows = report.comparison_rows(run)
  assert all(r.within in ("yes", "no") or r.within.startswith("n/a") for r in rows)
  assert rows[0].ours.count("±") == 1


def test_report_launcher(workdirs):
  env = {**os.environ, "PYTHONPATH": ROOT}
  r = subprocess.run([sys.executable, "-m", "launch.report", f"--workdir={workdirs[0]}"], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "within band" in r.stdout and "theory" in r.stdout
  assert "Fig 9 needs the n_learned(D) exponent" in r.stdout  # the N sweep alone has no D axis: said so
  assert set(_claimed(r.stdout)) == {"fig2.png", "fig7.png", "fig8.png", "fig10.png"}


def test_paper_rows_scored_only_for_long_enough_paper_runs(workdirs):
  run = report.analyze(workdirs[0])
  run.config["task"].update(n_tasks=500, n=100, k=3)  # pretend the paper's task: rows are scored, or say why not
  run.config["train"]["batch_size"] = 20000
  rows = {r.quantity: r for r in report.comparison_rows(run)}
  assert rows["α_N, α=0.3"].within == "n/a: run ends at 1500 steps, the paper's fit needs >= 100000"
  assert rows["α_N, α=0.3"].paper == "0.34" and rows["α_N, α=0.3"].band == "[0.26, 0.42]"
  assert rows["α_S (500<S<15k), α=0.6"].within.startswith("n/a: run ends at 1500")
