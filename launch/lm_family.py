r"""Trains (or resumes) a language-model family and writes its per-token scaling report:
`python -m launch.lm_family --config=configs/lm_family.py:quick --workdir=runs/lm_family`. Logic: `scaling.lm.family`.
"""

from scaling.engine import launch
from scaling.lm import family

if __name__ == "__main__":
  launch.main(lambda config, workdir: family.run(config, workdir)["markdown"])
