"""fa_utils: the reproduction companion of "Feature Alignment as a Generative Process"
(Farias & Maziero, Front. Artif. Intell. 5:1025148, 2023).

Modules, one role each: ``config`` (profiles), ``data``, ``models`` (Appendix B), ``fa``
(the method, Section 3.1), ``train`` (the fit loop, checkpoints), ``losses``,
``metrics``, ``fid`` (Section 5), ``plotting``, ``outputs`` (figures/results folders),
``toy`` (Section 3.2), ``vfa`` and ``baselines`` (Sections 3.3-3.4, 5), ``local``
(Section 3.5), ``appendix`` (Appendix A), ``experiments`` and ``generative`` (what the
notebooks call), ``explorers`` (ipywidgets explorers for JupyterLab), ``distributed``
(DDP), ``runner`` (``python -m fa_utils``).
"""
__version__ = "0.1.0"
