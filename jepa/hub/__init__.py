"""jepa.hub: weights in and out.

* :func:`from_transformers` / :func:`to_transformers`: Hugging Face ``transformers.IJepaModel``
  to and from :class:`~jepa.models.vision.VisionTransformer`, identical outputs (``transformers``
  is optional: ``pip install 'jepa-torch[hf]'``).
* :func:`load_ijepa_checkpoint`: an official I-JEPA ``.pth.tar`` (encoder, predictor and EMA
  target) into an :class:`~jepa.models.IJEPA`; :func:`vit_from_ijepa_state_dict` and
  :func:`predictor_from_ijepa_state_dict` for single state dicts.
* :func:`from_pretrained`: any of these, or a directory of
  :meth:`~jepa.models.BaseModel.save_pretrained`, from a path.
"""

from jepa.hub.hf import from_transformers, to_transformers
from jepa.hub.ijepa import load_ijepa_checkpoint, predictor_from_ijepa_state_dict, vit_from_ijepa_state_dict
from jepa.hub.pretrained import from_pretrained

__all__ = [
    "from_pretrained",
    "from_transformers",
    "load_ijepa_checkpoint",
    "predictor_from_ijepa_state_dict",
    "to_transformers",
    "vit_from_ijepa_state_dict",
]
