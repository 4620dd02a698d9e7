"""A dynamical model of neural scaling laws (Bordelon, Atanasov & Pehlevan 2024; spec `dmft.md`): the random-feature
model and its gradient-descent sweep, kernel spectra of real data, the DMFT theory (`theory/`) and the experiments
that set theory next to simulation (`dmft`)."""
