"""Images in, model inputs out: decoding untrusted bytes (``decoding``), canonicalising a digit the way MNIST was
made (``digit``) and normalising a line of digits for the line reader (``lines``). Pure NumPy and Pillow, no web
framework and no torch, so the service, training and evaluation all prepare images with exactly this code."""
