"""DICOM networking: send to a PACS (C-STORE), query it (C-FIND), pull from it (C-GET/C-MOVE)
and receive from it (storage SCP); Storage Commitment; with TCP_NODELAY, optional TLS, rate
limits and retries.

Modules import pydicom/pynetdicom only inside functions, so importing them is cheap.
"""
