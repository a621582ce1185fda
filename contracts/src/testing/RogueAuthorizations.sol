// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAuthorizations} from "../IAuthorizations.sol";

/// @title RogueAuthorizations
/// @notice TEST FIXTURE ONLY — never deploy for real. A dishonest Authorizations contract that
///         emits the same events as the real one but checks nothing (no coordinator role, no
///         approvals). It exists so the tests can show that the regulator's audit, which
///         recomputes everything from events, catches what a dishonest contract lets through.
contract RogueAuthorizations is IAuthorizations {
    address private immutable _registry;
    mapping(bytes32 => Authorization) private _authorizations;

    /// @notice Create the fixture over `registry_`.
    /// @param registry_ The Registry.
    constructor(address registry_) {
        _registry = registry_;
    }

    /// @notice Write any authorization, unchecked; `approvers` is taken on trust.
    /// @param terms The terms.
    /// @param approvers Claimed approvers.
    function authorize(Terms calldata terms, address[] calldata approvers) external {
        Authorization storage a = _authorizations[terms.jobId];
        a.terms = terms;
        a.coordinator = msg.sender;
        a.createdAt = uint64(block.timestamp);
        a.approvers = approvers;
        emit AuthorizationCreated(terms.jobId, bytes32(0), terms, msg.sender, false, approvers);
    }

    /// @notice Revoke, unchecked.
    /// @param jobId The job.
    function revoke(bytes32 jobId) external {
        _authorizations[jobId].revokedAt = uint64(block.timestamp);
        emit AuthorizationRevoked(jobId, msg.sender);
    }

    /// @inheritdoc IAuthorizations
    function authorization(bytes32 jobId) external view returns (Authorization memory) {
        return _authorizations[jobId];
    }

    /// @inheritdoc IAuthorizations
    function registry() external view returns (address) {
        return _registry;
    }
}
