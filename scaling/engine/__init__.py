"""The sweep engine, paper-agnostic: an experiment supplies a config, a plan and pure per-member functions; the
engine owns the member grid, padding and sharding over devices, the chunked host loop, the workdir (config check,
lock, metrics, atomic arrays, orbax checkpoints), progress, NaN/Inf stops and the named-axis arrays.

Modules: `config` (config checks and variant arguments), `io` (the workdir: files of a run), `checkpoints` (orbax),
`members` (member grid, padding, mesh), `loop` (host loop of one compiled program), `experiment` (the experiment
interface and `run`), `launch` (the absl launcher helper), `fanout` and `follow` (a sweep as a job array of tasks
through submitit, followed, retried and merged). Nothing here imports a paper's module.
"""
