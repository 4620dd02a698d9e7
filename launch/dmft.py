r"""DMFT theory and random-feature simulations: `python -m launch.dmft --config=configs/dmft.py:quick
--workdir=runs/dmft`; prints the variant's table. Logic: `scaling.dynamics.dmft`."""

from scaling.dynamics import dmft
from scaling.engine import launch

if __name__ == "__main__":
  launch.main(dmft.run)
