"""Video in, ``.gnvc`` out, and back: the VAE, the latent codec and the refiner end to end.

This package sits above :mod:`gnvc.models` (which builds and loads the networks) and
:mod:`gnvc.codec` (the latent codec, its entropy coding and the container, which imports
nothing from the models): dependencies run one way. Encoding and decoding stream — frames are
pulled from a reader and pushed to a writer, and memory is bounded by one refinement window,
never by the video's length.
"""

from gnvc.videocodec.decoder import DecodeResult, decode_stream, decode_video
from gnvc.videocodec.encoder import EncodeResult, encode_stream, encode_video

__all__ = ["DecodeResult", "EncodeResult", "decode_stream", "decode_video", "encode_stream", "encode_video"]
