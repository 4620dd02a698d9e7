r"""The quantization paper's numbers from MSP workdirs: `python -m launch.report --workdir=runs/fig2_n
[--workdir=runs/fig2_d ...]`; prints the comparison table. Logic: `scaling.quanta.report`."""

from absl import flags

from scaling.engine import launch
from scaling.quanta import report

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "Workdir(s) of finished (or partial) MSP sweeps.")
flags.mark_flag_as_required("workdir")

if __name__ == "__main__":
  launch.main(lambda workdirs: report.report(workdirs), config=False, workdir=False,
              extra=lambda: {"workdirs": _WORKDIRS.value})
