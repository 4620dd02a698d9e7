r"""Figures and the paper-comparison table of MSP workdirs.

  python -m launch.report --workdir=runs/fig2_n [--workdir=runs/fig2_d ...]

Writes fig2/fig7/fig8 (and fig9/fig10 when the workdirs have an α axis) as PNG and PDF into each workdir and prints
a table: quantity, ours (± error), theory, paper, band, within band. The logic is in `scaling.quanta.report`.
"""

from absl import app, flags

from scaling.quanta import report

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "Workdir(s) of finished (or partial) MSP sweeps.")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(report.report(_WORKDIRS.value))


if __name__ == "__main__":
  app.run(main)
