"""Computations and cryptography: SecretFlow (PSI, SS-LR …), TenSEAL (CKKS), SM2/SM3/SM4 and BLS signatures."""
