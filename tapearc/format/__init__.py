"""The on-media archive format: an encrypted (TAE1) stream whose plaintext is a POSIX tar.

``tae`` holds the crypto layer (header, key wrapping, chunk nonces), ``tarstream`` the tar header
writer, ``writer`` the fast archive writer and ``reader`` random access and whole-stream
decryption. docs/FORMAT.md is the specification; this package knows nothing of drivers, the
catalog or the command line.
"""
