// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IReceipts} from "../IReceipts.sol";

/// @title RogueReceipts
/// @notice TEST FIXTURE ONLY — never deploy for real. A dishonest Receipts contract that emits
///         the same events as the real one but checks nothing (any sender, any job, any count,
///         anchors in any order), so the tests can show the regulator's audit catches it.
contract RogueReceipts is IReceipts {
    mapping(bytes32 => mapping(bytes32 => uint32)) private _runs;
    mapping(address => uint64) private _sequence;

    /// @notice Record a receipt, unchecked.
    /// @param jobId The job.
    /// @param datasetId The dataset.
    /// @param rowCount Rows used.
    /// @param resultHash Result hash.
    /// @param startedAt Start time.
    /// @param finishedAt End time.
    function recordUsage(
        bytes32 jobId,
        bytes32 datasetId,
        uint64 rowCount,
        bytes32 resultHash,
        uint64 startedAt,
        uint64 finishedAt
    ) external {
        uint32 run = ++_runs[jobId][datasetId];
        emit UsageRecorded(jobId, datasetId, msg.sender, rowCount, resultHash, startedAt, finishedAt, run);
    }

    /// @notice Anchor an audit head, unchecked (may go backwards).
    /// @param headHash Head hash.
    /// @param entryCount Entry count.
    function anchorAuditHead(bytes32 headHash, uint64 entryCount) external {
        uint64 sequence = ++_sequence[msg.sender];
        emit AuditHeadAnchored(msg.sender, headHash, entryCount, sequence);
    }
}
