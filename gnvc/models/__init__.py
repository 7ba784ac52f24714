"""Model components (VAE wrapper, profiles) and the model directory that holds them together."""
