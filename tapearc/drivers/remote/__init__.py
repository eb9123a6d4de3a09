"""Network stores as media: the remote driver (``driver``) over a store (``store``), with the
sftp and s3 stores. Each store module imports its client library only when used."""
