"""国密 mutual TLS (RFC 8998) for every HTTP hop: TLS 1.3 only, ``TLS_SM4_GCM_SM3``, ``curveSM2``,
``sm2sig_sm3``, SM2 certificates carrying each member's identity key, client certificate required.

* :mod:`~protocols.gmtls.certs` — a member's key as PKCS#8 PEM and its self-signed SM2 certificate;
* :mod:`~protocols.gmtls.context` — pinned server/client ``SSL.Context`` builders, per-connection key
  checks, the peer's proven key, the negotiated parameters;
* which keys are members: the service's one directory, :class:`protocols.identity.KeyDirectory`;
* :mod:`~protocols.gmtls.server` — uvicorn over 国密 TLS (the peer key in the ASGI scope);
* :mod:`~protocols.gmtls.client` — httpx transports (pooled, pinning the server's key);
* :mod:`~protocols.gmtls.config` — the ``tls`` settings section of a node or the coordinator.

Imports only ``protocols.crypto`` (and third-party packages); never ``contracts`` — the Registry read
is a callable the service passes in.
"""
