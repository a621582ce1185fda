// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Bls12381} from "../Bls12381.sol";

/// @title Bls12381Harness
/// @notice TEST FIXTURE: exposes the Bls12381 library so tests compare each step with py_ecc.
contract Bls12381Harness {
    /// @notice expand_message_xmd(SHA-256), 256 bytes.
    /// @param message The message.
    /// @param dst The domain separation tag.
    /// @return The uniform bytes.
    function expandMessageXmd(bytes calldata message, bytes calldata dst) external pure returns (bytes memory) {
        return Bls12381.expandMessageXmd(message, dst);
    }

    /// @notice hash_to_field into Fp2 (count 2).
    /// @param message The message.
    /// @param dst The domain separation tag.
    /// @return ok Whether the precompiles succeeded.
    /// @return u0 The first Fp2 element (128 bytes).
    /// @return u1 The second Fp2 element (128 bytes).
    function hashToFieldFp2(bytes calldata message, bytes calldata dst)
        external
        view
        returns (bool ok, bytes memory u0, bytes memory u1)
    {
        return Bls12381.hashToFieldFp2(message, dst);
    }

    /// @notice hash_to_curve onto G2.
    /// @param message The message.
    /// @param dst The domain separation tag.
    /// @return ok Whether the precompiles succeeded.
    /// @return point The G2 point (256 bytes).
    function hashToG2(bytes calldata message, bytes calldata dst) external view returns (bool ok, bytes memory point) {
        return Bls12381.hashToG2(message, dst);
    }

    /// @notice Signature verification.
    /// @param publicKey G1 public key (128 bytes).
    /// @param message The message.
    /// @param signature G2 signature (256 bytes).
    /// @param dst The domain separation tag.
    /// @return Whether it verifies.
    function verify(bytes calldata publicKey, bytes calldata message, bytes calldata signature, bytes calldata dst)
        external
        view
        returns (bool)
    {
        return Bls12381.verify(publicKey, message, signature, dst);
    }

    /// @notice G1 subgroup validity.
    /// @param point G1 point (128 bytes).
    /// @return Whether it is a valid non-identity subgroup point.
    function isValidG1(bytes calldata point) external view returns (bool) {
        return Bls12381.isValidG1(point);
    }

    /// @notice Whether `compressed` is the compression of `point`.
    /// @param compressed 48-byte compressed G1 point.
    /// @param point 128-byte G1 point.
    /// @return The answer.
    function isCompressionOf(bytes calldata compressed, bytes calldata point) external pure returns (bool) {
        return Bls12381.isCompressionOf(compressed, point);
    }
}
