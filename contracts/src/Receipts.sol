// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAuthorizations} from "./IAuthorizations.sol";
import {IReceipts} from "./IReceipts.sol";
import {IRegistry} from "./IRegistry.sol";

/// @title Receipts
/// @notice Usage receipts — a node records each use of its dataset under a job's authorization,
///         accepted only while the authorization is live and under its maximum runs, one at a time
///         (`recordUsage`) or many in one transaction (`recordUsageBatch`) — and the anchors of each
///         node's append-only audit-log head.
/// @dev A receipt carries the node's own measured run times. The chain accepts them within
///      `TIME_TOLERANCE` seconds of the recording block's timestamp: a run may not finish after
///      `block.timestamp + TIME_TOLERANCE` nor start before `createdAt - TIME_TOLERANCE` of its
///      authorization, and `startedAt <= finishedAt`. A receipt recorded long after its run (queued
///      while the chain was unreachable) is accepted; the regulator's audit reports it as late.
contract Receipts is IReceipts {
    /// @notice Seconds a node's clock may run ahead of the chain's (or behind it at the run's start).
    uint64 public constant TIME_TOLERANCE = 60;

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
    /// @notice A run must not finish before it started (startedAt <= finishedAt).
    error InvalidTimes(uint64 startedAt, uint64 finishedAt);
    /// @notice The run claims to finish after the recording block's time plus `TIME_TOLERANCE`.
    error FinishedInFuture(uint64 finishedAt, uint64 blockTimestamp);
    /// @notice The run claims to start before its authorization was written (less `TIME_TOLERANCE`).
    error StartedBeforeAuthorization(bytes32 jobId, uint64 startedAt, uint64 createdAt);
    /// @notice A batch must hold at least one receipt.
    error EmptyBatch();
    /// @notice Receipt `index` of a batch was refused with `reason` (the ABI-encoded custom error
    ///         `recordUsage` would raise for it); nothing of the batch was recorded.
    error BatchItemRefused(uint256 index, bytes reason);
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
    ///
    /// Requirements:
    ///
    /// - the caller is an active member and owns `datasetId`;
    /// - the authorization of `jobId` exists, covers `datasetId`, is not revoked or expired, and
    ///   `datasetId` has runs left under it;
    /// - `startedAt <= finishedAt <= block.timestamp + TIME_TOLERANCE` and
    ///   `startedAt + TIME_TOLERANCE >= ` the authorization's `createdAt`.
    ///
    /// Emits a {UsageRecorded} event.
    /// @param jobId The job.
    /// @param datasetId The dataset used.
    /// @param rowCount Rows of the dataset that took part.
    /// @param resultHash SM3 hash of what the run produced.
    /// @param startedAt Unix time the run started (node clock).
    /// @param finishedAt Unix time the run finished (node clock).
    function recordUsage(
        bytes32 jobId,
        bytes32 datasetId,
        uint64 rowCount,
        bytes32 resultHash,
        uint64 startedAt,
        uint64 finishedAt
    ) external {
        if (!_registry.isActive(msg.sender)) revert NotMember(msg.sender);
        Usage memory u = Usage(jobId, datasetId, rowCount, resultHash, startedAt, finishedAt);
        bytes memory refusal = _record(u, _authorizations.authorization(jobId));
        if (refusal.length != 0) {
            assembly ("memory-safe") {
                revert(add(refusal, 0x20), mload(refusal))
            }
        }
    }

    /// @notice Record many uses in one transaction: each receipt is checked exactly as by
    ///         `recordUsage` (against its authorization as it stands, counting the batch's own
    ///         earlier receipts towards the maximum runs) and gets its own {UsageRecorded} event.
    ///         All or nothing: one refused receipt refuses the whole batch.
    ///
    /// Requirements:
    ///
    /// - the caller is an active member and `usages` is not empty;
    /// - every receipt meets the requirements of `recordUsage`.
    ///
    /// Emits one {UsageRecorded} event per receipt, in order.
    /// @param usages The receipts.
    function recordUsageBatch(Usage[] calldata usages) external {
        if (!_registry.isActive(msg.sender)) revert NotMember(msg.sender);
        if (usages.length == 0) revert EmptyBatch();
        IAuthorizations.Authorization memory a;
        for (uint256 i = 0; i < usages.length; ++i) {
            Usage memory u = usages[i];
            if (i == 0 || u.jobId != a.terms.jobId) a = _authorizations.authorization(u.jobId);
            bytes memory refusal = _record(u, a);
            if (refusal.length != 0) revert BatchItemRefused(i, refusal);
        }
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

    /// @dev Check `u` against `a` (its job's authorization); record it and return empty bytes, or
    ///      return the ABI-encoded custom error that refuses it (recording nothing).
    function _record(Usage memory u, IAuthorizations.Authorization memory a) private returns (bytes memory) {
        if (a.createdAt == 0) return abi.encodeWithSelector(UnknownAuthorization.selector, u.jobId);
        if (!_contains(a.terms.datasetIds, u.datasetId)) {
            return abi.encodeWithSelector(DatasetNotAuthorized.selector, u.jobId, u.datasetId);
        }
        if (_registry.ownerOf(u.datasetId) != msg.sender) {
            return abi.encodeWithSelector(NotDatasetOwner.selector, u.datasetId, msg.sender);
        }
        if (a.revokedAt != 0) return abi.encodeWithSelector(AuthorizationRevoked.selector, u.jobId, a.revokedAt);
        if (block.timestamp >= a.terms.expiry) {
            return abi.encodeWithSelector(AuthorizationExpired.selector, u.jobId, a.terms.expiry);
        }
        uint32 used = _runs[u.jobId][u.datasetId];
        if (used >= a.terms.maxRuns) {
            return abi.encodeWithSelector(MaxRunsReached.selector, u.jobId, u.datasetId, a.terms.maxRuns);
        }
        if (u.startedAt > u.finishedAt) return abi.encodeWithSelector(InvalidTimes.selector, u.startedAt, u.finishedAt);
        if (u.finishedAt > block.timestamp + TIME_TOLERANCE) {
            return abi.encodeWithSelector(FinishedInFuture.selector, u.finishedAt, uint64(block.timestamp));
        }
        if (uint256(u.startedAt) + TIME_TOLERANCE < a.createdAt) {
            return abi.encodeWithSelector(StartedBeforeAuthorization.selector, u.jobId, u.startedAt, a.createdAt);
        }
        _runs[u.jobId][u.datasetId] = used + 1;
        emit UsageRecorded(
            u.jobId, u.datasetId, msg.sender, u.rowCount, u.resultHash, u.startedAt, u.finishedAt, used + 1
        );
        return "";
    }

    function _contains(bytes32[] memory list, bytes32 item) private pure returns (bool) {
        for (uint256 i = 0; i < list.length; ++i) {
            if (list[i] == item) return true;
        }
        return false;
    }
}
