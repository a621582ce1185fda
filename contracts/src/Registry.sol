// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Bls12381} from "./Bls12381.sol";
import {IRegistry} from "./IRegistry.sol";

/// @title Registry
/// @notice Members of the federation (departments, banks, regulators, coordinators, researchers)
///         with their SM2 and BLS12-381 public keys, admitted and removed by a set of governors
///         with a threshold; and the datasets the data-holding members own.
/// @dev No single owner key: every membership or governance change is a proposal that executes
///      when `threshold` current governors have approved it. A BLS key is only admitted with a
///      valid proof of possession, checked here on chain (rogue-key defence for aggregates).
contract Registry is IRegistry {
    /// @notice What a governance proposal does.
    enum ProposalKind {
        ADD_MEMBER,
        REMOVE_MEMBER,
        ADD_GOVERNOR,
        REMOVE_GOVERNOR,
        SET_THRESHOLD
    }

    /// @notice A member's record. Removal clears `active` and keeps the rest for the audit trail.
    struct Member {
        Role role;
        bool active;
        uint64 admittedAt;
        string name;
        bytes sm2PublicKey;
        bytes blsPublicKey;
        string enode;
    }

    /// @notice The payload of an ADD_MEMBER proposal.
    /// @dev `blsPublicKey` is the 128-byte EIP-2537 G1 point, `blsPublicKeyCompressed` the same
    ///      key in its 48-byte compressed form (the message of the proof of possession) and
    ///      `blsProofOfPossession` the 256-byte EIP-2537 G2 proof. All three empty = no BLS key.
    ///      `enode` is the member's Besu node URL (may be empty).
    struct Admission {
        address account;
        Role role;
        string name;
        bytes sm2PublicKey;
        bytes blsPublicKey;
        bytes blsPublicKeyCompressed;
        bytes blsProofOfPossession;
        string enode;
    }

    /// @notice A registered dataset.
    struct Dataset {
        address owner;
        bytes32 schemaHash;
        uint8 grade;
        uint64 registeredAt;
    }

    /// @notice A governance proposal.
    struct Proposal {
        ProposalKind kind;
        address proposer;
        bool executed;
        bytes payload;
    }

    /// @notice Highest sensitivity grade (分级 1..MAX_GRADE; MAX_GRADE is the most sensitive).
    uint8 public constant MAX_GRADE = 4;
    /// @notice Length of an uncompressed SM2 public key (x || y).
    uint256 public constant SM2_PUBLIC_KEY_LENGTH = 64;

    mapping(address => Member) private _members;
    address[] private _memberList;
    mapping(bytes32 => Dataset) private _datasets;
    bytes32[] private _datasetList;

    mapping(address => bool) private _isGovernor;
    address[] private _governors;
    /// @notice Number of governor approvals a proposal needs to execute.
    uint256 public threshold;
    Proposal[] private _proposals;
    mapping(uint256 => mapping(address => bool)) private _approvedBy;

    address private immutable _deployer;
    /// @notice The Authorizations contract bound to this registry.
    address public authorizations;
    /// @notice The Receipts contract bound to this registry.
    address public receipts;

    /// @notice A governance proposal was created (and approved by its proposer).
    event ProposalCreated(uint256 indexed proposalId, ProposalKind kind, address indexed proposer, bytes payload);
    /// @notice A governor approved a proposal; `approvals` counts current governors that approved.
    event ProposalApproved(uint256 indexed proposalId, address indexed governor, uint256 approvals);
    /// @notice A proposal reached the threshold and took effect.
    event ProposalExecuted(uint256 indexed proposalId);
    /// @notice A member was admitted (or re-admitted after removal).
    event MemberAdmitted(
        address indexed account, Role role, string name, bytes sm2PublicKey, bytes blsPublicKey, string enode
    );
    /// @notice A member was removed; its records stay, inactive.
    event MemberRemoved(address indexed account);
    /// @notice A governor was added.
    event GovernorAdded(address indexed governor);
    /// @notice A governor was removed.
    event GovernorRemoved(address indexed governor);
    /// @notice The approval threshold changed.
    event ThresholdChanged(uint256 previousThreshold, uint256 newThreshold);
    /// @notice A member registered a dataset it owns.
    event DatasetRegistered(bytes32 indexed datasetId, address indexed owner, bytes32 schemaHash, uint8 grade);
    /// @notice The Authorizations and Receipts contracts were bound to this registry (once).
    event ContractsBound(address authorizations, address receipts);

    /// @notice The caller is not a governor.
    error NotGovernor(address account);
    /// @notice No proposal has this id.
    error UnknownProposal(uint256 proposalId);
    /// @notice The proposal has already been executed.
    error ProposalAlreadyExecuted(uint256 proposalId);
    /// @notice This governor already approved this proposal.
    error AlreadyApproved(uint256 proposalId, address governor);
    /// @notice A threshold must lie in [1, number of governors].
    error InvalidThreshold(uint256 threshold, uint256 governors);
    /// @notice The address is already a governor.
    error GovernorExists(address account);
    /// @notice The address is not a governor.
    error UnknownGovernor(address account);
    /// @notice The zero address is not allowed here.
    error ZeroAddress();
    /// @notice The account is already an active member.
    error MemberExists(address account);
    /// @notice The account is not an active member (removal of a non-member).
    error UnknownMember(address account);
    /// @notice Role NONE cannot be admitted.
    error InvalidRole();
    /// @notice A member needs a name.
    error EmptyName();
    /// @notice An SM2 public key is 64 bytes (x || y).
    error InvalidSm2Key(uint256 length);
    /// @notice The BLS public key is malformed, not in the G1 subgroup, infinity, or its
    ///         compressed form does not match.
    error InvalidBlsKey();
    /// @notice The BLS proof of possession does not verify.
    error InvalidProofOfPossession();
    /// @notice The caller is not an active member.
    error NotMember(address account);
    /// @notice Only data holders (DEPARTMENT, BANK) register datasets.
    error NotDataHolder(address account, Role role);
    /// @notice The dataset id is already registered.
    error DatasetExists(bytes32 datasetId);
    /// @notice A dataset id must be non-zero.
    error InvalidDatasetId();
    /// @notice Sensitivity grades run from 1 to MAX_GRADE.
    error InvalidGrade(uint8 grade);
    /// @notice The contracts are already bound.
    error AlreadyBound();
    /// @notice Only the deployer binds the contracts, once.
    error NotDeployer(address account);

    modifier onlyGovernor() {
        if (!_isGovernor[msg.sender]) revert NotGovernor(msg.sender);
        _;
    }

    /// @notice Create the registry with its initial governors and approval threshold.
    /// @param governors_ The initial governors (distinct, non-zero).
    /// @param threshold_ Approvals a proposal needs, in [1, governors_.length].
    constructor(address[] memory governors_, uint256 threshold_) {
        for (uint256 i = 0; i < governors_.length; ++i) {
            _addGovernor(governors_[i]);
        }
        if (threshold_ == 0 || threshold_ > governors_.length) revert InvalidThreshold(threshold_, governors_.length);
        threshold = threshold_;
        _deployer = msg.sender;
        emit ThresholdChanged(0, threshold_);
    }

    // ------------------------------------------------------------------ wiring

    /// @notice Bind the Authorizations and Receipts contracts so that readers (the regulator's
    ///         audit) find them from the registry alone. Only the deployer, only once.
    /// @param authorizations_ The Authorizations contract.
    /// @param receipts_ The Receipts contract.
    function bind(address authorizations_, address receipts_) external {
        if (msg.sender != _deployer) revert NotDeployer(msg.sender);
        if (authorizations != address(0)) revert AlreadyBound();
        if (authorizations_ == address(0) || receipts_ == address(0)) revert ZeroAddress();
        authorizations = authorizations_;
        receipts = receipts_;
        emit ContractsBound(authorizations_, receipts_);
    }

    // ------------------------------------------------------------------ governance

    /// @notice Propose admitting a member. The BLS key, if any, must come with a valid proof of
    ///         possession; it is verified now, so an invalid admission never becomes a proposal.
    /// @param admission The member's account, role, name and keys.
    /// @return proposalId The new proposal's id.
    function proposeAddMember(Admission calldata admission) external onlyGovernor returns (uint256 proposalId) {
        _validateAdmission(admission);
        return _propose(ProposalKind.ADD_MEMBER, abi.encode(admission));
    }

    /// @notice Propose removing an active member.
    /// @param account The member to remove.
    /// @return proposalId The new proposal's id.
    function proposeRemoveMember(address account) external onlyGovernor returns (uint256 proposalId) {
        if (!_members[account].active) revert UnknownMember(account);
        return _propose(ProposalKind.REMOVE_MEMBER, abi.encode(account));
    }

    /// @notice Propose adding a governor.
    /// @param account The new governor.
    /// @return proposalId The new proposal's id.
    function proposeAddGovernor(address account) external onlyGovernor returns (uint256 proposalId) {
        if (account == address(0)) revert ZeroAddress();
        if (_isGovernor[account]) revert GovernorExists(account);
        return _propose(ProposalKind.ADD_GOVERNOR, abi.encode(account));
    }

    /// @notice Propose removing a governor (the remaining governors must still reach the threshold).
    /// @param account The governor to remove.
    /// @return proposalId The new proposal's id.
    function proposeRemoveGovernor(address account) external onlyGovernor returns (uint256 proposalId) {
        if (!_isGovernor[account]) revert UnknownGovernor(account);
        if (_governors.length - 1 < threshold) revert InvalidThreshold(threshold, _governors.length - 1);
        return _propose(ProposalKind.REMOVE_GOVERNOR, abi.encode(account));
    }

    /// @notice Propose a new approval threshold.
    /// @param newThreshold In [1, number of governors].
    /// @return proposalId The new proposal's id.
    function proposeThreshold(uint256 newThreshold) external onlyGovernor returns (uint256 proposalId) {
        if (newThreshold == 0 || newThreshold > _governors.length) {
            revert InvalidThreshold(newThreshold, _governors.length);
        }
        return _propose(ProposalKind.SET_THRESHOLD, abi.encode(newThreshold));
    }

    /// @notice Approve a pending proposal; it executes in this call when the approvals of current
    ///         governors reach the threshold.
    /// @param proposalId The proposal to approve.
    /// @return executed True if the proposal took effect.
    function approve(uint256 proposalId) external onlyGovernor returns (bool executed) {
        if (proposalId >= _proposals.length) revert UnknownProposal(proposalId);
        if (_proposals[proposalId].executed) revert ProposalAlreadyExecuted(proposalId);
        if (_approvedBy[proposalId][msg.sender]) revert AlreadyApproved(proposalId, msg.sender);
        return _approve(proposalId);
    }

    function _propose(ProposalKind kind, bytes memory payload) private returns (uint256 proposalId) {
        proposalId = _proposals.length;
        _proposals.push(Proposal({kind: kind, proposer: msg.sender, executed: false, payload: payload}));
        emit ProposalCreated(proposalId, kind, msg.sender, payload);
        _approve(proposalId);
    }

    function _approve(uint256 proposalId) private returns (bool) {
        _approvedBy[proposalId][msg.sender] = true;
        uint256 count = approvalCount(proposalId);
        emit ProposalApproved(proposalId, msg.sender, count);
        if (count < threshold) return false;
        Proposal storage p = _proposals[proposalId];
        p.executed = true;
        _execute(p.kind, p.payload);
        emit ProposalExecuted(proposalId);
        return true;
    }

    function _execute(ProposalKind kind, bytes memory payload) private {
        if (kind == ProposalKind.ADD_MEMBER) {
            Admission memory a = abi.decode(payload, (Admission));
            if (_members[a.account].active) revert MemberExists(a.account);
            if (_members[a.account].role == Role.NONE) _memberList.push(a.account);
            _members[a.account] = Member({
                role: a.role,
                active: true,
                admittedAt: uint64(block.timestamp),
                name: a.name,
                sm2PublicKey: a.sm2PublicKey,
                blsPublicKey: a.blsPublicKey,
                enode: a.enode
            });
            emit MemberAdmitted(a.account, a.role, a.name, a.sm2PublicKey, a.blsPublicKey, a.enode);
        } else if (kind == ProposalKind.REMOVE_MEMBER) {
            address account = abi.decode(payload, (address));
            if (!_members[account].active) revert UnknownMember(account);
            _members[account].active = false;
            emit MemberRemoved(account);
        } else if (kind == ProposalKind.ADD_GOVERNOR) {
            _addGovernor(abi.decode(payload, (address)));
        } else if (kind == ProposalKind.REMOVE_GOVERNOR) {
            _removeGovernor(abi.decode(payload, (address)));
        } else {
            uint256 newThreshold = abi.decode(payload, (uint256));
            if (newThreshold == 0 || newThreshold > _governors.length) {
                revert InvalidThreshold(newThreshold, _governors.length);
            }
            emit ThresholdChanged(threshold, newThreshold);
            threshold = newThreshold;
        }
    }

    function _addGovernor(address account) private {
        if (account == address(0)) revert ZeroAddress();
        if (_isGovernor[account]) revert GovernorExists(account);
        _isGovernor[account] = true;
        _governors.push(account);
        emit GovernorAdded(account);
    }

    function _removeGovernor(address account) private {
        if (!_isGovernor[account]) revert UnknownGovernor(account);
        if (_governors.length - 1 < threshold) revert InvalidThreshold(threshold, _governors.length - 1);
        _isGovernor[account] = false;
        for (uint256 i = 0; i < _governors.length; ++i) {
            if (_governors[i] == account) {
                _governors[i] = _governors[_governors.length - 1];
                _governors.pop();
                break;
            }
        }
        emit GovernorRemoved(account);
    }

    function _validateAdmission(Admission calldata a) private view {
        if (a.account == address(0)) revert ZeroAddress();
        if (_members[a.account].active) revert MemberExists(a.account);
        if (a.role == Role.NONE) revert InvalidRole();
        if (bytes(a.name).length == 0) revert EmptyName();
        if (a.sm2PublicKey.length != SM2_PUBLIC_KEY_LENGTH) revert InvalidSm2Key(a.sm2PublicKey.length);
        if (a.blsPublicKey.length == 0) {
            if (a.blsPublicKeyCompressed.length != 0 || a.blsProofOfPossession.length != 0) revert InvalidBlsKey();
            return;
        }
        if (!Bls12381.isValidG1(a.blsPublicKey)) revert InvalidBlsKey();
        if (!Bls12381.isCompressionOf(a.blsPublicKeyCompressed, a.blsPublicKey)) revert InvalidBlsKey();
        if (!Bls12381.verify(a.blsPublicKey, a.blsPublicKeyCompressed, a.blsProofOfPossession, Bls12381.POP_DST)) {
            revert InvalidProofOfPossession();
        }
    }

    // ------------------------------------------------------------------ datasets

    /// @notice Register a dataset owned by the caller, an active DEPARTMENT or BANK.
    /// @param datasetId The dataset's id (non-zero, unique).
    /// @param schemaHash SM3 hash of the dataset's schema.
    /// @param grade Sensitivity grade, 1..MAX_GRADE.
    function registerDataset(bytes32 datasetId, bytes32 schemaHash, uint8 grade) external {
        Member storage m = _members[msg.sender];
        if (!m.active) revert NotMember(msg.sender);
        if (m.role != Role.DEPARTMENT && m.role != Role.BANK) revert NotDataHolder(msg.sender, m.role);
        if (datasetId == bytes32(0)) revert InvalidDatasetId();
        if (_datasets[datasetId].owner != address(0)) revert DatasetExists(datasetId);
        if (grade == 0 || grade > MAX_GRADE) revert InvalidGrade(grade);
        _datasets[datasetId] =
            Dataset({owner: msg.sender, schemaHash: schemaHash, grade: grade, registeredAt: uint64(block.timestamp)});
        _datasetList.push(datasetId);
        emit DatasetRegistered(datasetId, msg.sender, schemaHash, grade);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IRegistry
    function isActive(address account) external view returns (bool) {
        return _members[account].active;
    }

    /// @inheritdoc IRegistry
    function roleOf(address account) external view returns (Role) {
        return _members[account].role;
    }

    /// @inheritdoc IRegistry
    function ownerOf(bytes32 datasetId) external view returns (address) {
        return _datasets[datasetId].owner;
    }

    /// @inheritdoc IRegistry
    function blsPublicKeyOf(address account) external view returns (bytes memory) {
        return _members[account].blsPublicKey;
    }

    /// @inheritdoc IRegistry
    function isGovernor(address account) external view returns (bool) {
        return _isGovernor[account];
    }

    /// @notice The full record of `account` (role NONE if never admitted).
    /// @param account The member's address.
    /// @return The member record.
    function member(address account) external view returns (Member memory) {
        return _members[account];
    }

    /// @notice Every address ever admitted, in admission order (check `member(a).active`).
    /// @return The addresses.
    function members() external view returns (address[] memory) {
        return _memberList;
    }

    /// @notice A dataset's record (owner is zero if unknown).
    /// @param datasetId The dataset's id.
    /// @return The dataset record.
    function dataset(bytes32 datasetId) external view returns (Dataset memory) {
        return _datasets[datasetId];
    }

    /// @notice Every registered dataset id, in registration order.
    /// @return The ids.
    function datasetIds() external view returns (bytes32[] memory) {
        return _datasetList;
    }

    /// @notice The current governors.
    /// @return The governor addresses.
    function governors() external view returns (address[] memory) {
        return _governors;
    }

    /// @notice Number of proposals ever created.
    /// @return The count.
    function proposalCount() external view returns (uint256) {
        return _proposals.length;
    }

    /// @notice A proposal by id.
    /// @param proposalId The proposal's id.
    /// @return The proposal.
    function proposal(uint256 proposalId) external view returns (Proposal memory) {
        if (proposalId >= _proposals.length) revert UnknownProposal(proposalId);
        return _proposals[proposalId];
    }

    /// @notice How many current governors have approved `proposalId`.
    /// @param proposalId The proposal's id.
    /// @return count The number of approvals that count toward the threshold.
    function approvalCount(uint256 proposalId) public view returns (uint256 count) {
        for (uint256 i = 0; i < _governors.length; ++i) {
            if (_approvedBy[proposalId][_governors[i]]) ++count;
        }
    }

    /// @notice True iff `governor` has approved `proposalId`.
    /// @param proposalId The proposal's id.
    /// @param governor The governor.
    /// @return Whether it approved.
    function hasApproved(uint256 proposalId, address governor) external view returns (bool) {
        return _approvedBy[proposalId][governor];
    }
}
