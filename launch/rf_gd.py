r"""Random-feature gradient descent against the DMFT: `python -m launch.rf_gd --config=configs/rf_gd.py:quick
--workdir=runs/rf_gd`; prints the comparison table. Logic: `scaling.dynamics.rf_gd`."""

from scaling.dynamics import rf_gd
from scaling.engine import launch

if __name__ == "__main__":
  launch.main(lambda config, workdir: rf_gd.comparison_table(rf_gd.compare_to_theory(rf_gd.run(config, workdir),
                                                                                      config)))
