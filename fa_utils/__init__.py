"""fa_utils: the reproduction companion of "Feature Alignment as a Generative Process"
(Farias & Maziero, Front. Artif. Intell. 5:1025148, 2023).

Modules in layers, each using only those above it:

* settings, data, networks: ``config`` (profiles, composed section configs, seed
  streams), ``data``, ``models`` (Appendix B), ``losses``;
* the methods: ``fa`` (Algorithm 1, Section 3.1, with its first inner step from the
  shared start r_0 = 0), ``vfa`` (Sections 3.3-3.4), ``baselines`` (the AE, VAE and GAN of
  Section 5), ``local`` (Section 3.5); Appendix A's checks live in notebook 06 and the toy
  of Section 3.2 in notebook 01;
* the trainer: ``train`` (``fit``: checkpoints, resume, interrupts; it knows no method);
* the wiring: ``experiments`` (every trained model of the notebooks, from a config);
* evaluation and outputs: ``fid``, ``metrics`` (also timers, memory meters), ``claims`` (and
  REPORT.md), ``paper`` (the paper's numbers), ``plotting``, ``outputs``;
* tools: ``explorers`` (JupyterLab; ``explorer_base`` their base, ``latent_pad`` the 2-D
  pad), ``distributed`` (DDP), ``runner`` (``python -m fa_utils``: notebook parameters,
  papermill execution).
"""
__version__ = "0.1.0"
