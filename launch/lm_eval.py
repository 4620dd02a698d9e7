r"""Per-token losses of language-model checkpoints and their scaling report:
`python -m launch.lm_eval --config=configs/lm_eval.py:smollm2 --workdir=runs/smollm2`. Logic: `scaling.lm.eval_models`.
"""

from scaling.engine import launch
from scaling.lm import eval_models

if __name__ == "__main__":
  launch.main(eval_models.evaluate_models)
