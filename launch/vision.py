r"""One-pass 1-D ResNets of several widths on MNIST-1D: `python -m launch.vision --config=configs/vision.py:quick
--workdir=runs/vision_quick`; prints the final held-out loss per width. Logic: `scaling.dynamics.vision`."""

from scaling.dynamics import vision
from scaling.engine import launch

if __name__ == "__main__":
  launch.main(lambda config, workdir: vision.summary(vision.run(config, workdir)))
