// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title Bls12381
/// @notice BLS signatures on BLS12-381 as in the IETF ciphersuite
///         BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_ (what py_ecc.bls.G2ProofOfPossession
///         implements): public keys in G1, signatures in G2, hash-to-G2 with SSWU and
///         expand_message_xmd(SHA-256). Built on the EIP-2537 precompiles (Prague).
/// @dev Points use the EIP-2537 encodings: an Fp element is 64 bytes (16 zero bytes and the
///      48-byte big-endian value), G1 = x || y (128 bytes), G2 = x.c0 || x.c1 || y.c0 || y.c1
///      (256 bytes). Functions return false instead of reverting so callers raise their own
///      named errors.
library Bls12381 {
    address private constant G1ADD = address(0x0b);
    address private constant G1MSM = address(0x0c);
    address private constant G2ADD = address(0x0d);
    address private constant PAIRING_CHECK = address(0x0f);
    address private constant MAP_FP2_TO_G2 = address(0x11);
    address private constant MODEXP = address(0x05);

    uint256 internal constant G1_LENGTH = 128;
    uint256 internal constant G2_LENGTH = 256;
    uint256 internal constant G1_COMPRESSED_LENGTH = 48;

    /// @notice Domain separation tag of signatures.
    bytes internal constant SIGN_DST = "BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
    /// @notice Domain separation tag of proofs of possession.
    bytes internal constant POP_DST = "BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

    /// @dev The negated G1 generator, EIP-2537 encoded.
    bytes private constant NEG_G1 =
        hex"0000000000000000000000000000000017f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
        hex"00000000000000000000000000000000114d1d6855d545a8aa7d76c8cf2e21f267816aef1db507c96655b9d5caac42364e6f38ba0ecb751bad54dcd6b939c2ca";
    /// @dev The base-field modulus p (48 bytes, big-endian).
    bytes private constant P =
        hex"1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab";
    /// @dev (p - 1) / 2 (48 bytes): y is the "larger" root iff y > (p - 1) / 2.
    bytes private constant HALF_P =
        hex"0d0088f51cbff34d258dd3db21a5d66bb23ba5c279c2895fb39869507b587b120f55ffff58a9ffffdcff7fffffffd555";

    /// @notice expand_message_xmd with SHA-256 producing 256 bytes (RFC 9380, section 5.3.1).
    function expandMessageXmd(bytes memory message, bytes memory dst) internal pure returns (bytes memory out) {
        bytes memory dstPrime = bytes.concat(dst, bytes1(uint8(dst.length)));
        bytes32 b0 = sha256(bytes.concat(new bytes(64), message, hex"0100", hex"00", dstPrime));
        bytes32 bi = sha256(bytes.concat(b0, hex"01", dstPrime));
        out = new bytes(256);
        assembly {
            mstore(add(out, 32), bi)
        }
        for (uint256 i = 2; i <= 8; ++i) {
            bi = sha256(bytes.concat(b0 ^ bi, bytes1(uint8(i)), dstPrime));
            assembly {
                mstore(add(out, mul(i, 32)), bi)
            }
        }
    }

    /// @notice hash_to_field into Fp2, count 2: returns (u0, u1), 128 bytes each (EIP-2537 Fp2).
    function hashToFieldFp2(bytes memory message, bytes memory dst)
        internal
        view
        returns (bool ok, bytes memory u0, bytes memory u1)
    {
        bytes memory uniform = expandMessageXmd(message, dst);
        bytes[4] memory e;
        for (uint256 k = 0; k < 4; ++k) {
            bytes memory chunk = new bytes(64);
            for (uint256 j = 0; j < 64; ++j) {
                chunk[j] = uniform[k * 64 + j];
            }
            bytes memory reduced;
            (ok, reduced) = MODEXP.staticcall(abi.encodePacked(uint256(64), uint256(1), uint256(48), chunk, uint8(1), P));
            if (!ok || reduced.length != 48) return (false, "", "");
            e[k] = bytes.concat(bytes16(0), reduced);
        }
        u0 = bytes.concat(e[0], e[1]);
        u1 = bytes.concat(e[2], e[3]);
        ok = true;
    }

    /// @notice hash_to_curve onto G2 (SSWU, random oracle): MAP_FP2_TO_G2(u0) + MAP_FP2_TO_G2(u1).
    /// @dev The precompile's map already clears the cofactor, and clearing is linear, so the sum
    ///      equals clear_cofactor(map(u0) + map(u1)) of the specification.
    function hashToG2(bytes memory message, bytes memory dst) internal view returns (bool, bytes memory) {
        (bool ok, bytes memory u0, bytes memory u1) = hashToFieldFp2(message, dst);
        if (!ok) return (false, "");
        (bool ok0, bytes memory q0) = MAP_FP2_TO_G2.staticcall(u0);
        (bool ok1, bytes memory q1) = MAP_FP2_TO_G2.staticcall(u1);
        if (!ok0 || !ok1 || q0.length != G2_LENGTH || q1.length != G2_LENGTH) return (false, "");
        (bool okAdd, bytes memory h) = G2ADD.staticcall(bytes.concat(q0, q1));
        if (!okAdd || h.length != G2_LENGTH) return (false, "");
        return (true, h);
    }

    /// @notice Sum of two G1 points; ok is false on a malformed or off-curve input.
    function g1Add(bytes memory a, bytes memory b) internal view returns (bool, bytes memory) {
        (bool ok, bytes memory r) = G1ADD.staticcall(bytes.concat(a, b));
        if (!ok || r.length != G1_LENGTH) return (false, "");
        return (true, r);
    }

    /// @notice True iff `point` is a well-formed G1 point in the prime-order subgroup and not infinity.
    /// @dev G1MSM performs the subgroup check EIP-2537 mandates; multiplying by 1 returns the point.
    function isValidG1(bytes memory point) internal view returns (bool) {
        if (point.length != G1_LENGTH || keccak256(point) == keccak256(new bytes(G1_LENGTH))) return false;
        (bool ok, bytes memory r) = G1MSM.staticcall(bytes.concat(point, bytes32(uint256(1))));
        return ok && r.length == G1_LENGTH && keccak256(r) == keccak256(point);
    }

    /// @notice True iff `signature` (G2) is a valid signature of `message` by `publicKey` (G1) under `dst`.
    function verify(bytes memory publicKey, bytes memory message, bytes memory signature, bytes memory dst)
        internal
        view
        returns (bool)
    {
        if (publicKey.length != G1_LENGTH || signature.length != G2_LENGTH) return false;
        (bool ok, bytes memory h) = hashToG2(message, dst);
        if (!ok) return false;
        (bool okPair, bytes memory r) = PAIRING_CHECK.staticcall(bytes.concat(publicKey, h, NEG_G1, signature));
        return okPair && r.length == 32 && uint256(bytes32(r)) == 1;
    }

    /// @notice True iff the 48-byte compressed (ZCash format) G1 point `compressed` encodes `point`.
    /// @dev Flags in the top three bits of the first byte: 0x80 compressed, 0x40 infinity,
    ///      0x20 y is the larger root. The caller has checked `point` is on the curve.
    function isCompressionOf(bytes memory compressed, bytes memory point) internal pure returns (bool) {
        if (compressed.length != G1_COMPRESSED_LENGTH || point.length != G1_LENGTH) return false;
        bytes1 flags = compressed[0] & 0xe0;
        if (flags & 0x80 == 0 || flags & 0x40 != 0) return false;
        for (uint256 i = 0; i < 16; ++i) {
            if (point[i] != 0 || point[64 + i] != 0) return false;
        }
        if (compressed[0] & 0x1f != point[16]) return false;
        for (uint256 i = 1; i < 48; ++i) {
            if (compressed[i] != point[16 + i]) return false;
        }
        bool larger = false;
        bytes memory halfP = HALF_P;
        for (uint256 i = 0; i < 48; ++i) {
            bytes1 y = point[80 + i];
            bytes1 half = halfP[i];
            if (y != half) {
                larger = y > half;
                break;
            }
        }
        return larger == (flags & 0x20 != 0);
    }
}
