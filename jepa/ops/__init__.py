"""jepa.ops: the one door to every compute backend (torch reference, C++, CUDA, Triton).

Which backend runs is decided per call by ``jepa.ops._backend.choose`` (see the kernels guide); ``JEPA_BACKEND`` and
:func:`use_backend` force one, globally (``triton``) or per op (``ema_update=cuda,attention=torch``).
"""

from jepa.ops._backend import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    registered_ops,
    requested_backend,
    use_backend,
)
from jepa.ops.amp import unscale_, unscale_reference, update_scale_, update_scale_reference
from jepa.ops.attention import attention, attention_reference
from jepa.ops.ema_update import ema_update, ema_update_reference
from jepa.ops.info_nce import info_nce, info_nce_reference
from jepa.ops.jepa_loss import jepa_loss, jepa_loss_reference
from jepa.ops.sigreg import sigreg, sigreg_ecf, sigreg_ecf_reference, sigreg_from_ecf, sigreg_reference

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "attention",
    "attention_reference",
    "available_backends",
    "ema_update",
    "ema_update_reference",
    "info_nce",
    "info_nce_reference",
    "jepa_loss",
    "jepa_loss_reference",
    "registered_ops",
    "requested_backend",
    "sigreg",
    "sigreg_ecf",
    "sigreg_ecf_reference",
    "sigreg_from_ecf",
    "sigreg_reference",
    "unscale_",
    "unscale_reference",
    "update_scale_",
    "update_scale_reference",
    "use_backend",
]
