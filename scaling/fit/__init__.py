"""Scaling-law fitting: BNSL and its rivals (M1-M4, Chinchilla), vmapped multistart fits (spec `bnsl.md`).

Fitting runs in float64 inside ``jax.enable_x64(True)``; nothing here turns x64 on globally.
"""

from scaling.fit.chinchilla_fit import (ChinchillaBootstrap, ChinchillaFit, bootstrap_chinchilla, chinchilla_loss,
                                        fit_chinchilla)
from scaling.fit.data import load_benchmark
from scaling.fit.breaks import BreakSelection, select_breaks, select_breaks_many
from scaling.fit.fitter import BootstrapResult, Batching, FitResult, Polish, bootstrap, fit, fit_many, pad_curves
from scaling.fit.forms import FORMS, Form, bnsl, bnsl_naive, chinchilla, m1, m2, m3, m4
from scaling.fit.compute_optimal import IsoflopResult, frontier, isoflop_parabola, synthetic_chinchilla
from scaling.fit.metrics import get_error, rmsle, sle, win_rates
from scaling.fit.objectives import MSLE_LOG1P, OBJECTIVES, SLE, Objective, huber_log
from scaling.fit.official import OfficialResult, official_fit, official_recipe

__all__ = ["load_benchmark", "BootstrapResult", "Batching", "BreakSelection", "FitResult", "OfficialResult", "Polish",
           "bootstrap", "fit", "fit_many", "official_fit", "official_recipe", "pad_curves", "select_breaks",
           "select_breaks_many", "FORMS", "Form", "bnsl", "bnsl_naive", "chinchilla", "m1", "m2", "m3", "m4",
           "get_error", "rmsle", "sle", "win_rates", "MSLE_LOG1P", "OBJECTIVES", "SLE", "Objective", "huber_log",
           "ChinchillaBootstrap", "ChinchillaFit", "bootstrap_chinchilla", "chinchilla_loss", "fit_chinchilla",
           "IsoflopResult", "frontier", "isoflop_parabola", "synthetic_chinchilla"]
