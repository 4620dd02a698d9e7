r"""One-pass 1-D ResNets of several widths on MNIST-1D, then Fig 1 (a, b) of the dynamical-model paper:
`python -m launch.vision --config=configs/vision.py:quick --workdir=runs/vision_quick`; prints the final held-out
loss per width and the measured-vs-DMFT exponent table. Logic: `scaling.dynamics.vision`, `vision_report`."""

from scaling.dynamics import vision, vision_report
from scaling.engine import distributed, launch


def _main(config, workdir):
  curves = vision.run(config, workdir)
  if not distributed.is_primary():  # process 0 writes the analysis
    return None
  return vision.summary(curves) + "\n\n" + vision_report.report(workdir, curves)


if __name__ == "__main__":
  launch.main(_main)
