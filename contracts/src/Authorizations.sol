// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Bls12381} from "./Bls12381.sol";
import {IAuthorizations} from "./IAuthorizations.sol";
import {IRegistry} from "./IRegistry.sol";

/// @title Authorizations
/// @notice Job authorizations: written only by a COORDINATOR and only when the owner of every
///         dataset has approved exactly these terms — each from its own account beforehand
///         (`approve`), or all at once through one aggregated BLS12-381 signature verified here
///         with the EIP-2537 precompiles (`authorizeWithBls`). Approvers and governors can revoke.
/// @dev Approvals sign `approvalDigest(terms)`, which binds the chain id, this contract, the job,
///      the manifest hash, the datasets, the requester, the expiry and the maximum runs: an
///      approval for one manifest (or job, or limit) is useless for any other.
contract Authorizations is IAuthorizations {
    /// @notice Domain tag of approval digests.
    bytes32 public constant APPROVAL_TYPEHASH = keccak256("dcp.Authorization.v1");
    /// @notice Most datasets one authorization may name.
    uint256 public constant MAX_DATASETS = 64;

    IRegistry private immutable _registry;
    mapping(bytes32 => Authorization) private _authorizations;
    mapping(bytes32 => mapping(bytes32 => address)) private _approvals;

    /// @notice The caller is not an active member.
    error NotMember(address account);
    /// @notice Only an active COORDINATOR writes authorizations.
    error NotCoordinator(address account);
    /// @notice The caller does not own this dataset.
    error NotDatasetOwner(bytes32 datasetId, address account);
    /// @notice The dataset is not part of the terms.
    error DatasetNotInTerms(bytes32 datasetId);
    /// @notice The dataset is not registered.
    error UnknownDataset(bytes32 datasetId);
    /// @notice A dataset appears twice in the terms.
    error DuplicateDataset(bytes32 datasetId);
    /// @notice Terms must name between 1 and MAX_DATASETS datasets.
    error InvalidDatasetCount(uint256 count);
    /// @notice The job id must be non-zero.
    error InvalidJobId();
    /// @notice The expiry must lie in the future.
    error InvalidExpiry(uint64 expiry, uint256 nowTimestamp);
    /// @notice At least one run must be allowed.
    error InvalidMaxRuns();
    /// @notice The requester is not an active member.
    error RequesterNotMember(address requester);
    /// @notice This job already has an authorization.
    error AuthorizationExists(bytes32 jobId);
    /// @notice The dataset's owner has not approved these exact terms.
    error ApprovalMissing(bytes32 datasetId, address owner);
    /// @notice The dataset's owner was removed from the federation.
    error InactiveOwner(address owner);
    /// @notice The dataset's owner has no BLS key, so it cannot take part in an aggregate.
    error MissingBlsKey(address owner);
    /// @notice The aggregated BLS signature does not verify for the owners' keys and these terms.
    error InvalidAggregateSignature();
    /// @notice No authorization exists for this job.
    error UnknownAuthorization(bytes32 jobId);
    /// @notice The authorization is already revoked.
    error AlreadyRevoked(bytes32 jobId);
    /// @notice Only an approver of the authorization or a governor may revoke it.
    error NotAllowedToRevoke(bytes32 jobId, address account);

    /// @notice Create the contract reading members and datasets from `registry_`.
    /// @param registry_ The Registry.
    constructor(IRegistry registry_) {
        _registry = registry_;
    }

    /// @notice The digest approvers sign for `terms` (also the BLS message, 32 bytes).
    /// @param terms The authorization terms.
    /// @return The digest.
    function approvalDigest(Terms calldata terms) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                APPROVAL_TYPEHASH,
                block.chainid,
                address(this),
                terms.jobId,
                terms.manifestHash,
                keccak256(abi.encodePacked(terms.datasetIds)),
                terms.requester,
                terms.expiry,
                terms.maxRuns
            )
        );
    }

    /// @notice Approve `terms` for the listed datasets, each of which the caller must own.
    /// @param terms The authorization terms being approved.
    /// @param datasetIds The caller's datasets among `terms.datasetIds` that it approves.
    function approve(Terms calldata terms, bytes32[] calldata datasetIds) external {
        if (!_registry.isActive(msg.sender)) revert NotMember(msg.sender);
        _validateTerms(terms);
        bytes32 digest = approvalDigest(terms);
        for (uint256 i = 0; i < datasetIds.length; ++i) {
            bytes32 d = datasetIds[i];
            if (_registry.ownerOf(d) != msg.sender) revert NotDatasetOwner(d, msg.sender);
            if (!_contains(terms.datasetIds, d)) revert DatasetNotInTerms(d);
            _approvals[digest][d] = msg.sender;
            emit Approved(digest, terms.jobId, d, msg.sender);
        }
    }

    /// @notice Write the authorization of `terms.jobId`; every dataset's owner must have approved
    ///         these exact terms with `approve`. Only an active COORDINATOR.
    /// @param terms The authorization terms.
    function authorize(Terms calldata terms) external {
        _checkCoordinator();
        _validateTerms(terms);
        bytes32 digest = approvalDigest(terms);
        address[] memory owners = _owners(terms.datasetIds);
        for (uint256 i = 0; i < terms.datasetIds.length; ++i) {
            bytes32 d = terms.datasetIds[i];
            address owner = _registry.ownerOf(d);
            if (!_registry.isActive(owner)) revert InactiveOwner(owner);
            if (_approvals[digest][d] != owner) revert ApprovalMissing(d, owner);
        }
        _store(terms, digest, false, owners);
    }

    /// @notice Write the authorization of `terms.jobId` with one aggregated BLS signature by the
    ///         distinct owners of its datasets over `approvalDigest(terms)`, verified on chain
    ///         (FastAggregateVerify with the EIP-2537 precompiles). Only an active COORDINATOR.
    /// @param terms The authorization terms.
    /// @param signature The aggregate signature, a 256-byte EIP-2537 G2 point.
    function authorizeWithBls(Terms calldata terms, bytes calldata signature) external {
        _checkCoordinator();
        _validateTerms(terms);
        bytes32 digest = approvalDigest(terms);
        address[] memory owners = _owners(terms.datasetIds);
        bytes memory aggregateKey;
        for (uint256 i = 0; i < owners.length; ++i) {
            if (!_registry.isActive(owners[i])) revert InactiveOwner(owners[i]);
            bytes memory key = _registry.blsPublicKeyOf(owners[i]);
            if (key.length != Bls12381.G1_LENGTH) revert MissingBlsKey(owners[i]);
            if (i == 0) {
                aggregateKey = key;
            } else {
                bool ok;
                (ok, aggregateKey) = Bls12381.g1Add(aggregateKey, key);
                if (!ok) revert InvalidAggregateSignature();
            }
        }
        if (!Bls12381.verify(aggregateKey, abi.encodePacked(digest), signature, Bls12381.SIGN_DST)) {
            revert InvalidAggregateSignature();
        }
        _store(terms, digest, true, owners);
        emit AggregateApproval(terms.jobId, digest, owners, signature);
    }

    /// @notice Revoke the authorization of `jobId`. Allowed to any of its approvers (the owners of
    ///         its datasets when it was written) and to any governor of the registry.
    /// @param jobId The job.
    function revoke(bytes32 jobId) external {
        Authorization storage a = _authorizations[jobId];
        if (a.createdAt == 0) revert UnknownAuthorization(jobId);
        if (a.revokedAt != 0) revert AlreadyRevoked(jobId);
        if (!_registry.isGovernor(msg.sender) && !_isApprover(a.approvers, msg.sender)) {
            revert NotAllowedToRevoke(jobId, msg.sender);
        }
        a.revokedAt = uint64(block.timestamp);
        emit AuthorizationRevoked(jobId, msg.sender);
    }

    /// @inheritdoc IAuthorizations
    function authorization(bytes32 jobId) external view returns (Authorization memory) {
        return _authorizations[jobId];
    }

    /// @inheritdoc IAuthorizations
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @notice Who approved dataset `datasetId` under digest `digest` (zero if nobody).
    /// @param digest An approval digest.
    /// @param datasetId The dataset.
    /// @return The approving owner.
    function approvalOf(bytes32 digest, bytes32 datasetId) external view returns (address) {
        return _approvals[digest][datasetId];
    }

    /// @notice True iff the authorization of `jobId` exists, is not revoked and has not expired.
    /// @param jobId The job.
    /// @return Whether it is live now.
    function isLive(bytes32 jobId) external view returns (bool) {
        Authorization storage a = _authorizations[jobId];
        return a.createdAt != 0 && a.revokedAt == 0 && block.timestamp < a.terms.expiry;
    }

    function _checkCoordinator() private view {
        if (!_registry.isActive(msg.sender) || _registry.roleOf(msg.sender) != IRegistry.Role.COORDINATOR) {
            revert NotCoordinator(msg.sender);
        }
    }

    function _validateTerms(Terms calldata terms) private view {
        if (terms.jobId == bytes32(0)) revert InvalidJobId();
        uint256 n = terms.datasetIds.length;
        if (n == 0 || n > MAX_DATASETS) revert InvalidDatasetCount(n);
        if (terms.expiry <= block.timestamp) revert InvalidExpiry(terms.expiry, block.timestamp);
        if (terms.maxRuns == 0) revert InvalidMaxRuns();
        if (!_registry.isActive(terms.requester)) revert RequesterNotMember(terms.requester);
        if (_authorizations[terms.jobId].createdAt != 0) revert AuthorizationExists(terms.jobId);
        for (uint256 i = 0; i < n; ++i) {
            bytes32 d = terms.datasetIds[i];
            if (_registry.ownerOf(d) == address(0)) revert UnknownDataset(d);
            for (uint256 j = 0; j < i; ++j) {
                if (terms.datasetIds[j] == d) revert DuplicateDataset(d);
            }
        }
    }

    /// @dev The distinct owners of `datasetIds`, in first-appearance order.
    function _owners(bytes32[] calldata datasetIds) private view returns (address[] memory owners) {
        address[] memory buf = new address[](datasetIds.length);
        uint256 count = 0;
        for (uint256 i = 0; i < datasetIds.length; ++i) {
            address owner = _registry.ownerOf(datasetIds[i]);
            if (!_isApprover(buf, owner)) buf[count++] = owner;
        }
        owners = new address[](count);
        for (uint256 i = 0; i < count; ++i) {
            owners[i] = buf[i];
        }
    }

    function _store(Terms calldata terms, bytes32 digest, bool viaBls, address[] memory owners) private {
        Authorization storage a = _authorizations[terms.jobId];
        a.terms = terms;
        a.digest = digest;
        a.coordinator = msg.sender;
        a.createdAt = uint64(block.timestamp);
        a.viaBls = viaBls;
        a.approvers = owners;
        emit AuthorizationCreated(terms.jobId, digest, terms, msg.sender, viaBls, owners);
    }

    function _contains(bytes32[] calldata list, bytes32 item) private pure returns (bool) {
        for (uint256 i = 0; i < list.length; ++i) {
            if (list[i] == item) return true;
        }
        return false;
    }

    function _isApprover(address[] memory list, address account) private pure returns (bool) {
        for (uint256 i = 0; i < list.length; ++i) {
            if (list[i] == account) return true;
        }
        return false;
    }
}
