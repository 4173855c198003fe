"""Customer data protection: the payload codec, its keys and the codec server."""
