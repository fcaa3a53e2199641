"""Reading certificate and key files without Django: telling formats apart by their bytes
(formats.py), and capping every key-derivation cost before anything derives (kdf.py, pbe.py).
Shared by the server's upload checks (certificates/custom.py) and the CLI (cli/files.py), which
ships this package with it."""
