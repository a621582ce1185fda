"""国密 (SM2/SM3/SM4) and BLS12-381 cryptography, member keystores and signed approvals.

Modules: :mod:`.errors` (named errors), :mod:`.sm3`, :mod:`.sm4` (SM4-GCM streams/files),
:mod:`.sm2` (GB/T 32918 signatures and encryption), :mod:`.envelope` (SM2-wrapped SM4 keys),
:mod:`.bls` (BLS12-381 with proofs of possession, EIP-2537 encodings), :mod:`.keystore`
(encrypted member identity) and :mod:`.approvals` (signed approvals of job manifests).
"""
