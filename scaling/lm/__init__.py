"""Language models for the quantization paper's LLM half (spec `quanta.md` §3-4): GGUF / Hugging Face loaders into
the pure-function transformer (`scaling.nn.transformer`), a local text corpus with a flat prediction index, per-token
losses and their scaling analysis, and quanta discovery from gradients (QDG)."""
