"""Image canonicalisation shared by training and serving: untrusted bytes to the inputs the models expect."""
