// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IReceipts
/// @notice Events of usage receipts and audit anchors, shared by the Receipts contract and its readers.
interface IReceipts {
    /// @notice One usage receipt, as `recordUsageBatch` takes it (the arguments of `recordUsage`).
    struct Usage {
        bytes32 jobId;
        bytes32 datasetId;
        uint64 rowCount;
        bytes32 resultHash;
        uint64 startedAt;
        uint64 finishedAt;
    }

    /// @notice `node`, owner of `datasetId`, used it under `jobId`'s authorization (its `run`-th use, from 1).
    event UsageRecorded(
        bytes32 indexed jobId,
        bytes32 indexed datasetId,
        address indexed node,
        uint64 rowCount,
        bytes32 resultHash,
        uint64 startedAt,
        uint64 finishedAt,
        uint32 run
    );
    /// @notice `node` anchored the head of its append-only audit log (`sequence` counts its anchors from 1).
    event AuditHeadAnchored(address indexed node, bytes32 headHash, uint64 entryCount, uint64 sequence);
}
