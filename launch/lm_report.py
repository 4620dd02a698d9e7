r"""Re-writes the per-token scaling report of a losses workdir: `python -m launch.lm_report --workdir=runs/smollm2
[--fit_models=:-1]`. Logic: `scaling.lm.evaluate`."""

from absl import flags

from scaling.engine import launch
from scaling.lm import evaluate

_FIT = flags.DEFINE_string("fit_models", "", "Slice 'a:b' of the size-sorted models for the α_N fit; '' = all.")

if __name__ == "__main__":
  launch.main(lambda workdir, fit: evaluate.report(workdir, fit_models=evaluate.parse_fit_models(fit)), config=False,
              extra=lambda: {"fit": _FIT.value})
