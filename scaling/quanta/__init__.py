"""The quantization model of neural scaling (Michaud et al. 2023; spec `quanta.md`): the multitask sparse parity
task, the MSP sweep and its training step, the emergence analysis and exponent fits, the theory's predictions, and the
report with the paper's figures."""
