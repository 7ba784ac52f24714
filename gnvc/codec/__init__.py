"""The contextual I/P latent codec, its entropy coding and the ``.gnvc`` bitstream container."""
