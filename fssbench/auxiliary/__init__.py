"""DifFSS-style auxiliary supports: generated support images fed to an unchanged method as extra shots.

* :mod:`~fssbench.auxiliary.conditions` -- the control maps (semantic mask, scribble, soft HED edges);
* :mod:`~fssbench.auxiliary.hed` -- the HED edge network (weights from a local file);
* :mod:`~fssbench.auxiliary.generators` -- the backends (``controlnet``, ``pregenerated``, ``offline``);
* :mod:`~fssbench.auxiliary.cache` -- generated images on disk, keyed by everything they depend on;
* :mod:`~fssbench.auxiliary.supplier` -- suite settings, generation, and consumption as extra shots.

The ``offline`` backend is a stand-in for the diffusion model, not one: see its docstring.
"""
