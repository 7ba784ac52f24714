"""gnvc: a generative neural video codec.

Folders, by what they hold:
- ``io/``       reading and writing videos (PyAV, y4m, raw yuv, PNG folders), BT.709 colour.
- ``models/``   the VAE wrapper, profiles and the model directory (config + weights).
- ``codec/``    the contextual I/P latent codec, its entropy coding and the bitstream container.
- ``refiner/``  the flow-matching refinement with the video DiT and its conditional adapter.
- ``metrics/``  PSNR, MS-SSIM, LPIPS, DISTS, E_warp, CLIP-F.
- ``evaluation/`` anchors, BD-rate, RD plots and reports.
- ``data/``     dataset preparation and latent shards.
- ``training/`` the shared training runner and the training stages.
- ``storage/``  the artifact store (local directory or S3).
- ``cli/``      the ``gnvc`` command line.
"""

__version__ = "0.1.0"
