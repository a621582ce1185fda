// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IRegistry
/// @notice What Authorizations and Receipts read from the member and dataset registry.
interface IRegistry {
    /// @notice Member roles. NONE marks an address that was never admitted.
    enum Role {
        NONE,
        DEPARTMENT,
        BANK,
        REGULATOR,
        COORDINATOR,
        RESEARCHER
    }

    /// @notice True iff `account` is an admitted, active member.
    function isActive(address account) external view returns (bool);

    /// @notice The role of `account` (NONE if never admitted; kept after removal).
    function roleOf(address account) external view returns (Role);

    /// @notice The owner of dataset `datasetId`, or the zero address if it is not registered.
    function ownerOf(bytes32 datasetId) external view returns (address);

    /// @notice The 128-byte EIP-2537 BLS public key of `account` (empty if it has none).
    function blsPublicKeyOf(address account) external view returns (bytes memory);

    /// @notice True iff `account` is a governor.
    function isGovernor(address account) external view returns (bool);
}
