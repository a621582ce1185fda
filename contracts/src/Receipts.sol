// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAuthorizations} from "./IAuthorizations.sol";
import {IReceipts} from "./IReceipts.sol";
import {IRegistry} from "./IRegistry.sol";

/// @title Receipts
/// @notice Usage receipts — a node records each use of its dataset under a job's authorization,
///         accepted only while the authorization is live and under its maximum runs — and the
///         anchors of each node's append-only audit-log head.
contract Receipts is IReceipts {
    IRegistry private immutable _registry;
    IAuthorizations private immutable _authorizations;

    mapping(bytes32 => mapping(bytes32 => uint32)) private _runs;

    /// @notice The latest audit anchor of a node.
    struct Anchor {
        bytes32 headHash;
        uint64 entryCount;
        uint64 sequence;
        uint64 anchoredAt;
    }

    mapping(address => Anchor) private _anchors;

    /// @notice The caller is not an active member.
    error NotMember(address account);
    /// @notice No authorization exists for this job.
    error UnknownAuthorization(bytes32 jobId);
    /// @notice The dataset is not covered by the job's authorization.
    error DatasetNotAuthorized(bytes32 jobId, bytes32 datasetId);
    /// @notice The caller does not own the dataset.
    error NotDatasetOwner(bytes32 datasetId, address account);
    /// @notice The authorization was revoked.
    error AuthorizationRevoked(bytes32 jobId, uint64 revokedAt);
    /// @notice The authorization has expired.
    error AuthorizationExpired(bytes32 jobId, uint64 expiry);
    /// @notice The dataset has been used the maximum number of times under this authorization.
    error MaxRunsReached(bytes32 jobId, bytes32 datasetId, uint32 maxRuns);
    /// @notice Times must satisfy startedAt <= finishedAt <= now.
    error InvalidTimes(uint64 startedAt, uint64 finishedAt);
    /// @notice An anchor must cover more entries than the node's previous anchor.
    error AnchorNotAdvancing(uint64 previousEntryCount, uint64 entryCount);

    /// @notice Create the contract enforcing `authorizations_` over members of `registry_`.
    /// @param registry_ The Registry.
    /// @param authorizations_ The Authorizations contract.
    constructor(IRegistry registry_, IAuthorizations authorizations_) {
        _registry = registry_;
        _authorizations = authorizations_;
    }

    /// @notice Record one use of `datasetId` under `jobId`'s authorization. Only from the node
    ///         that owns the dataset, while the authorization is live and below its maximum runs.
    /// @param jobId The job.
    /// @param datasetId The dataset used.
    /// @param rowCount Rows of the dataset that took part.
    /// @param resultHash SM3 hash of what the run produced.
    /// @param startedAt Unix time the run started (node clock).
    /// @param finishedAt Unix time the run finished (node clock), not in the future.
    function recordUsage(
        bytes32 jobId,
        bytes32 datasetId,
        uint64 rowCount,
        bytes32 resultHash,
        uint64 startedAt,
        uint64 finishedAt
    ) external {
        if (!_registry.isActive(msg.sender)) revert NotMember(msg.sender);
        IAuthorizations.Authorization memory a = _authorizations.authorization(jobId);
        if (a.createdAt == 0) revert UnknownAuthorization(jobId);
        if (!_contains(a.terms.datasetIds, datasetId)) revert DatasetNotAuthorized(jobId, datasetId);
        if (_registry.ownerOf(datasetId) != msg.sender) revert NotDatasetOwner(datasetId, msg.sender);
        if (a.revokedAt != 0) revert AuthorizationRevoked(jobId, a.revokedAt);
        if (block.timestamp >= a.terms.expiry) revert AuthorizationExpired(jobId, a.terms.expiry);
        uint32 used = _runs[jobId][datasetId];
        if (used >= a.terms.maxRuns) revert MaxRunsReached(jobId, datasetId, a.terms.maxRuns);
        if (startedAt > finishedAt || finishedAt > block.timestamp) revert InvalidTimes(startedAt, finishedAt);
        _runs[jobId][datasetId] = used + 1;
        emit UsageRecorded(jobId, datasetId, msg.sender, rowCount, resultHash, startedAt, finishedAt, used + 1);
    }

    /// @notice Anchor the caller's audit-log head: its hash and the number of entries it covers,
    ///         which must exceed the previous anchor's.
    /// @param headHash Hash of the newest audit-log entry (chained over all before it).
    /// @param entryCount Number of entries in the log up to that head.
    function anchorAuditHead(bytes32 headHash, uint64 entryCount) external {
        if (!_registry.isActive(msg.sender)) revert NotMember(msg.sender);
        Anchor storage prev = _anchors[msg.sender];
        if (entryCount <= prev.entryCount) revert AnchorNotAdvancing(prev.entryCount, entryCount);
        uint64 sequence = prev.sequence + 1;
        _anchors[msg.sender] =
            Anchor({headHash: headHash, entryCount: entryCount, sequence: sequence, anchoredAt: uint64(block.timestamp)});
        emit AuditHeadAnchored(msg.sender, headHash, entryCount, sequence);
    }

    /// @notice How many times `datasetId` has been used under `jobId`.
    /// @param jobId The job.
    /// @param datasetId The dataset.
    /// @return The run count.
    function runs(bytes32 jobId, bytes32 datasetId) external view returns (uint32) {
        return _runs[jobId][datasetId];
    }

    /// @notice The latest audit anchor of `node` (sequence 0 if none).
    /// @param node The node's member address.
    /// @return The anchor.
    function latestAnchor(address node) external view returns (Anchor memory) {
        return _anchors[node];
    }

    /// @notice The Registry and Authorizations contracts this contract enforces.
    /// @return registry_ The Registry.
    /// @return authorizations_ The Authorizations contract.
    function wiring() external view returns (address registry_, address authorizations_) {
        return (address(_registry), address(_authorizations));
    }

    function _contains(bytes32[] memory list, bytes32 item) private pure returns (bool) {
        for (uint256 i = 0; i < list.length; ++i) {
            if (list[i] == item) return true;
        }
        return false;
    }
}
