r"""Re-writes the per-token scaling report of a losses workdir (from `launch.lm_eval` or `launch.lm_family`):

  python -m launch.lm_report --workdir=runs/lm_family [--fit_models=:-1]

Figures under report/ and summary.md (without token contexts: those need the corpus, which the launchers that
evaluate pass in). `--fit_models` chooses which sizes the α_N fit uses (the paper fits the first 6 of 7 Pythia
models). Logic: `scaling.lm.evaluate.report`.
"""

from absl import app, flags

from scaling.lm import evaluate

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir holding losses.npz.")
_FIT = flags.DEFINE_string("fit_models", "", "Slice 'a:b' of the size-sorted models for the α_N fit; '' = all.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  fit = evaluate.parse_fit_models(_FIT.value)
  print(evaluate.report(_WORKDIR.value, fit_models=fit))


if __name__ == "__main__":
  app.run(main)
