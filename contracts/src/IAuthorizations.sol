// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IAuthorizations
/// @notice Types, events and reads of job authorizations, shared by the Authorizations contract,
///         the Receipts contract that enforces them, and every reader (the regulator's audit).
interface IAuthorizations {
    /// @notice The terms of a job's authorization. Approvers sign exactly these (via `approvalDigest`).
    struct Terms {
        bytes32 jobId;
        bytes32 manifestHash;
        bytes32[] datasetIds;
        address requester;
        uint64 expiry;
        uint32 maxRuns;
    }

    /// @notice A written authorization.
    struct Authorization {
        Terms terms;
        bytes32 digest;
        address coordinator;
        uint64 createdAt;
        uint64 revokedAt;
        bool viaBls;
        address[] approvers;
    }

    /// @notice The owner of `datasetId` approved the terms with digest `digest`.
    event Approved(bytes32 indexed digest, bytes32 indexed jobId, bytes32 indexed datasetId, address approver);
    /// @notice A coordinator wrote an authorization. `approvers` are the datasets' distinct owners.
    event AuthorizationCreated(
        bytes32 indexed jobId, bytes32 digest, Terms terms, address coordinator, bool viaBls, address[] approvers
    );
    /// @notice The authorization was approved by one aggregated BLS signature (EIP-2537 G2) of `approvers`.
    event AggregateApproval(bytes32 indexed jobId, bytes32 digest, address[] approvers, bytes signature);
    /// @notice The authorization was revoked by an approver or a governor.
    event AuthorizationRevoked(bytes32 indexed jobId, address indexed by);

    /// @notice The authorization of `jobId` (createdAt is 0 if there is none).
    function authorization(bytes32 jobId) external view returns (Authorization memory);

    /// @notice The registry this contract reads members and datasets from.
    function registry() external view returns (address);
}
