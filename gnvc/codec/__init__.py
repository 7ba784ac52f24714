"""The contextual I/P latent codec, its exact integer decoding loop, its entropy coding, and the
``.gnvc`` container. Imports nothing from :mod:`gnvc.models`; :mod:`gnvc.videocodec` puts the
VAE, this codec and the refiner together."""
