"""DiffUp (arXiv 2407.16182) as a stitchable, any-annotation, any-shot diffusion decoder, registered as ``diffup``.

Modules: ``baft`` (backbone-agnostic feature transform), ``uapf`` (uncertainty-aware prior fusion and
the layer-to-level rule), ``query_info`` (Sobel / Canny / VAE conditions), ``unet`` (the denoiser
with SCM), ``dqm`` (error-map and IoU quality heads), ``diffusion`` (plain and condition-offset
schedulers), ``model`` (the registered method). Design notes: ``methods/diffup/README.md``.
"""

from methods.diffup.model import Conditions, DiffUp

__all__ = ["Conditions", "DiffUp"]
