"""DI-NAS, disturbance-immune weight sharing (Niu et al., arXiv 2003.13089; a documented interpretation, see
``projection``): RSPS's supernet training whose weight update is projected orthogonally to what earlier children
learnt, by an OWM input-space projector (default) or a gradient-space one. ``callbacks.DisturbanceProbe``
measures the disturbance it is meant to remove."""

from __future__ import annotations

from typing import Any

from lightning_nas.methods.single_path.frame import ProjectorFactory, SinglePathSearch

OWM = {"class_path": "lightning_nas.methods.single_path.projection.OWMProjector",
       "init_args": {"alpha": 1.0, "alpha_final": 1.0e-5}}


class DINAS(SinglePathSearch):
    """DI-NAS: single-path training with orthogonal weight updates (default: OWM, alpha 1 -> 1e-5)."""

    def __init__(self, *args: Any, projector: ProjectorFactory = OWM, **kwargs: Any):
        """
        Args:
            projector: the orthogonal update (``single_path.projection``: ``OWMProjector`` or
                ``GradientSpaceProjector``).
        """
        super().__init__(*args, projector=projector, **kwargs)
