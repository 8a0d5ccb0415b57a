"""fa_utils: the reproduction companion of "Feature Alignment as a Generative Process"
(Farias & Maziero, Front. Artif. Intell. 5:1025148, 2023).

Floors; a module imports only from the floors above it (no cycles):

1. ``models`` (Appendix B networks, the Eq. 9 clamp), ``paper`` (the paper's numbers),
   ``metrics``, ``plotting``, ``outputs`` (where results go);
2. ``fa`` (Section 3.1, Algorithm 1, and the guards of every training step), ``data``,
   ``claims`` (the claims and results/REPORT.md);
3. ``vfa`` (Sections 3.3-3.4, with the KL and LSGAN losses), ``local`` (Section 3.5),
   ``train`` (``fit``: checkpoints, resume, Ctrl-C; it knows no method), ``fid``;
4. ``baselines`` (the AE, VAE and GAN of Section 5), ``explorers`` (JupyterLab);
5. ``config`` (profiles, one dataclass per notebook section);
6. ``experiments`` (every trained model of the notebooks; the MODELS registry), ``runner``
   (``python -m fa_utils``);
7. ``distributed`` (DDP with torchrun).

What one notebook alone uses lives in that notebook: the toy (01), Appendix A (06), the
local-FA memory measure (05), the label-free FID feature (04).
"""
__version__ = "0.1.0"
