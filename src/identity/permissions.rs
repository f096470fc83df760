//! The permission table: the one place that decides whether a principal may perform an action.
//! Extractors and domain functions ask [`permits`]; nothing else compares roles or scopes.
//! ARCHITECTURE.md reproduces this table; keep them in step.
//!
//! Resolution of *which* tenant a principal may reach (membership, the key's workspace) happens
//! before this table: a principal that cannot reach the org or workspace at all gets `404`; one
//! that reaches it but lacks the role or scope gets `403`.

use super::{Role, Scope, Scopes};

/// Everything a request can ask to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    // Server-wide, operator only.
    OrgCreate,
    OrgListAll,
    OrgSuspend,
    OperatorAdmin,
    // An organization.
    OrgRead,
    OrgUpdate,
    OrgDelete,
    MembersRead,
    MembersManage,
    /// Granting, changing or removing the owner role.
    OwnersManage,
    WorkspaceCreate,
    WorkspaceList,
    // A workspace (control plane).
    WorkspaceRead,
    WorkspaceUpdate,
    WorkspaceDelete,
    ApiKeysManage,
    TenantTokenMint,
    // A workspace (data plane).
    Search,
    Chat,
    DocumentsRead,
    Ingest,
    AgentsRead,
    AgentsManage,
    /// See every agent (private ones of others too) and edit or delete any agent; without it,
    /// only the owner of an agent edits it and only public agents are visible.
    AgentsAdmin,
    SessionsRead,
    /// Read every chat session of the workspace, not only one's own.
    SessionsReadAll,
    /// Set, clear and list an org's model providers (bring-your-own keys).
    ProvidersManage,
    Export,
}

/// Who asks, as far as the table is concerned: the operator, a member with their role in the org
/// at hand, or a key / tenant token with its (effective) scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Operator,
    Member(Role),
    Key(Scopes),
    Token(Scopes),
}

/// What API keys may do for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    Never,
    /// Needs this scope.
    Scope(Scope),
    /// Any key of the workspace (finer checks follow in the domain, e.g. minting only delegates
    /// scopes the key holds).
    AnyScope,
}

/// One row: the weakest role allowed (`None`: operator only), the key rule, and whether a tenant
/// token holding the key rule's scope may do it too.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub min_role: Option<Role>,
    pub key: KeyRule,
    pub token: bool,
}

const fn rule(min_role: Option<Role>, key: KeyRule, token: bool) -> Rule {
    Rule {
        min_role,
        key,
        token,
    }
}

use KeyRule::{AnyScope, Never, Scope as S};
use Role::{Admin, Member, Owner, Viewer};

/// The table. The operator may do everything.
pub const fn rule_for(action: Action) -> Rule {
    match action {
        Action::OrgCreate | Action::OrgListAll | Action::OrgSuspend | Action::OperatorAdmin => {
            rule(None, Never, false)
        }
        Action::OrgRead => rule(Some(Viewer), Never, false),
        Action::OrgUpdate => rule(Some(Admin), Never, false),
        Action::OrgDelete => rule(Some(Owner), Never, false),
        Action::MembersRead => rule(Some(Viewer), Never, false),
        Action::MembersManage => rule(Some(Admin), Never, false),
        Action::OwnersManage => rule(Some(Owner), Never, false),
        Action::WorkspaceCreate => rule(Some(Admin), Never, false),
        Action::WorkspaceList => rule(Some(Viewer), Never, false),
        Action::WorkspaceRead => rule(Some(Viewer), S(Scope::Manage), false),
        Action::WorkspaceUpdate => rule(Some(Admin), S(Scope::Manage), false),
        Action::WorkspaceDelete => rule(Some(Admin), Never, false),
        Action::ApiKeysManage => rule(Some(Admin), Never, false),
        Action::TenantTokenMint => rule(None, AnyScope, false),
        Action::Search => rule(Some(Viewer), S(Scope::Search), true),
        Action::Chat => rule(Some(Viewer), S(Scope::Chat), true),
        Action::DocumentsRead => rule(Some(Viewer), S(Scope::Ingest), false),
        Action::Ingest => rule(Some(Member), S(Scope::Ingest), false),
        Action::AgentsRead => rule(Some(Viewer), S(Scope::Chat), true),
        Action::AgentsManage => rule(Some(Member), S(Scope::Manage), false),
        Action::AgentsAdmin => rule(Some(Admin), S(Scope::Manage), false),
        Action::SessionsRead => rule(Some(Viewer), S(Scope::Chat), false),
        Action::SessionsReadAll => rule(Some(Admin), S(Scope::Manage), false),
        Action::ProvidersManage => rule(Some(Admin), Never, false),
        Action::Export => rule(Some(Admin), S(Scope::Manage), false),
    }
}

/// Whether `subject` may perform `action` (on a tenant it can reach).
pub fn permits(subject: Subject, action: Action) -> bool {
    let r = rule_for(action);
    match subject {
        Subject::Operator => true,
        Subject::Member(role) => r.min_role.is_some_and(|min| role >= min),
        Subject::Key(scopes) => match r.key {
            Never => false,
            S(s) => scopes.contains(s),
            AnyScope => !scopes.is_empty(),
        },
        Subject::Token(scopes) => {
            r.token
                && match r.key {
                    S(s) => scopes.contains(s),
                    _ => false,
                }
        }
    }
}

/// Whether a member with role `actor` may give role `target` to someone (or change / remove
/// someone who has it): admins manage admins, members and viewers; only owners touch owners.
pub fn may_manage_role(actor: Subject, target: Role) -> bool {
    if target == Role::Owner {
        permits(actor, Action::OwnersManage)
    } else {
        permits(actor, Action::MembersManage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 28] = [
        Action::OrgCreate,
        Action::OrgListAll,
        Action::OrgSuspend,
        Action::OperatorAdmin,
        Action::OrgRead,
        Action::OrgUpdate,
        Action::OrgDelete,
        Action::MembersRead,
        Action::MembersManage,
        Action::OwnersManage,
        Action::WorkspaceCreate,
        Action::WorkspaceList,
        Action::WorkspaceRead,
        Action::WorkspaceUpdate,
        Action::WorkspaceDelete,
        Action::ApiKeysManage,
        Action::TenantTokenMint,
        Action::Search,
        Action::Chat,
        Action::DocumentsRead,
        Action::Ingest,
        Action::AgentsRead,
        Action::AgentsManage,
        Action::AgentsAdmin,
        Action::SessionsRead,
        Action::SessionsReadAll,
        Action::ProvidersManage,
        Action::Export,
    ];

    #[test]
    fn operator_may_do_everything() {
        assert!(ALL.iter().all(|a| permits(Subject::Operator, *a)));
    }

    #[test]
    fn roles_are_monotonic() {
        for a in ALL {
            for (lo, hi) in [(Viewer, Member), (Member, Admin), (Admin, Owner)] {
                if permits(Subject::Member(lo), a) {
                    assert!(permits(Subject::Member(hi), a), "{a:?}: {hi} below {lo}");
                }
            }
        }
    }

    #[test]
    fn spot_checks() {
        let m = Subject::Member;
        assert!(permits(m(Viewer), Action::Search));
        assert!(!permits(m(Viewer), Action::Ingest));
        assert!(permits(m(Member), Action::Ingest));
        assert!(!permits(m(Member), Action::WorkspaceCreate));
        assert!(permits(m(Admin), Action::WorkspaceCreate));
        assert!(!permits(m(Admin), Action::OrgDelete));
        assert!(permits(m(Owner), Action::OrgDelete));
        assert!(!permits(m(Owner), Action::OrgSuspend));
        assert!(!permits(m(Owner), Action::OrgCreate));
        assert!(
            !permits(m(Owner), Action::TenantTokenMint),
            "users do not mint tokens"
        );
        assert!(may_manage_role(m(Admin), Member));
        assert!(may_manage_role(m(Admin), Admin));
        assert!(
            !may_manage_role(m(Admin), Owner),
            "admins never touch owners"
        );
        assert!(may_manage_role(m(Owner), Owner));
    }

    #[test]
    fn keys_and_tokens_follow_their_scopes() {
        let search: Scopes = [Scope::Search].into_iter().collect();
        let manage: Scopes = [Scope::Manage].into_iter().collect();
        assert!(permits(Subject::Key(search), Action::Search));
        assert!(!permits(Subject::Key(search), Action::Chat));
        assert!(permits(Subject::Key(manage), Action::WorkspaceUpdate));
        assert!(!permits(
            Subject::Key(Scopes::all()),
            Action::WorkspaceDelete
        ));
        assert!(!permits(Subject::Key(Scopes::all()), Action::ApiKeysManage));
        assert!(!permits(Subject::Key(Scopes::all()), Action::OrgRead));
        assert!(permits(Subject::Key(search), Action::TenantTokenMint));
        assert!(permits(Subject::Token(search), Action::Search));
        assert!(!permits(Subject::Token(Scopes::all()), Action::Ingest));
        assert!(!permits(
            Subject::Token(Scopes::all()),
            Action::WorkspaceRead
        ));
        assert!(!permits(
            Subject::Token(Scopes::all()),
            Action::TenantTokenMint
        ));
        // No action is open to a key or token holding no scope.
        for a in ALL {
            assert!(!permits(Subject::Key(Scopes::NONE), a));
            assert!(!permits(Subject::Token(Scopes::NONE), a));
        }
    }
}
