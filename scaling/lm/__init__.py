"""Language models for the quantization paper's LLM half (spec `quanta.md` §3-4): a pure-function decoder-only
transformer (Llama and GPT-NeoX switches), GGUF / Hugging Face loaders, a local text corpus with a flat prediction
index, per-token losses and their scaling analysis, and quanta discovery from gradients (QDG)."""
