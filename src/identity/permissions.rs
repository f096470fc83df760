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
    /// Change an org's billing fields: its plan (and so its limits and scheduler priority) and
    /// its status. Operator only: an org's own admins and owners may not.
    OrgBillingUpdate,
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
    /// Read the audit trail of an org or workspace (issue 12).
    AuditRead,
    /// Read an org's metered usage (issue 12).
    UsageRead,
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
        Action::OrgBillingUpdate => rule(None, Never, false),
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
        Action::AuditRead => rule(Some(Admin), Never, false),
        Action::UsageRead => rule(Some(Admin), Never, false),
    }
}

impl Action {
    /// Every action, in table order.
    pub const ALL: [Action; 31] = [
        Action::OrgCreate,
        Action::OrgListAll,
        Action::OrgSuspend,
        Action::OperatorAdmin,
        Action::OrgRead,
        Action::OrgUpdate,
        Action::OrgBillingUpdate,
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
        Action::AuditRead,
        Action::UsageRead,
    ];

    /// What the action does, in the words of a user ("manage API keys"): completes "may not ...".
    pub const fn describe(self) -> &'static str {
        match self {
            Action::OrgCreate => "create organizations",
            Action::OrgListAll => "list every organization of the server",
            Action::OrgSuspend => "suspend or reactivate an organization",
            Action::OperatorAdmin => "use the server's administration routes",
            Action::OrgRead => "read this organization",
            Action::OrgUpdate => "change this organization's name, slug or settings",
            Action::OrgBillingUpdate => "change an organization's plan, status or limits",
            Action::OrgDelete => "delete this organization",
            Action::MembersRead => "list the members of this organization",
            Action::MembersManage => "invite, change or remove members",
            Action::OwnersManage => "grant, change or remove the owner role",
            Action::WorkspaceCreate => "create workspaces",
            Action::WorkspaceList => "list this organization's workspaces",
            Action::WorkspaceRead => "read this workspace's settings",
            Action::WorkspaceUpdate => "change this workspace's name, slug or settings",
            Action::WorkspaceDelete => "delete this workspace",
            Action::ApiKeysManage => "manage API keys",
            Action::TenantTokenMint => "mint tenant tokens",
            Action::Search => "search",
            Action::Chat => "chat",
            Action::DocumentsRead => "read documents and jobs",
            Action::Ingest => "add, replace or delete documents",
            Action::AgentsRead => "read agents",
            Action::AgentsManage => "create, change or delete agents",
            Action::AgentsAdmin => "see private agents of others or change any agent",
            Action::SessionsRead => "read chat sessions",
            Action::SessionsReadAll => "read every chat session of this workspace",
            Action::ProvidersManage => "manage the organization's model providers",
            Action::Export => "export this workspace",
            Action::AuditRead => "read the audit trail",
            Action::UsageRead => "read the organization's usage",
        }
    }

    /// Who may do it, in words: "the admin role (or owner)", "an API key with the manage
    /// scope", ... joined into one sentence ("this needs ...").
    pub fn who_may(self) -> String {
        let r = rule_for(self);
        let mut who: Vec<String> = Vec::new();
        if let Some(role) = r.min_role {
            who.push(match role {
                Owner => "the owner role".to_string(),
                role => format!("the {role} role or higher"),
            });
        }
        match r.key {
            Never => {}
            AnyScope => who.push("an API key".to_string()),
            S(scope) if r.token => who.push(format!(
                "an API key or tenant token with the {} scope",
                scope.as_str()
            )),
            S(scope) => who.push(format!("an API key with the {} scope", scope.as_str())),
        }
        match who.len() {
            0 => "only the server operator may".to_string(),
            1 => format!("this needs {}", who[0]),
            _ => {
                let last = who.pop().unwrap_or_default();
                format!("this needs {}, or {last}", who.join(", "))
            }
        }
    }

    /// The message of a `403` refusing this action to a `who` ("user", "API key", "tenant
    /// token"): what is missing and who has it, never an internal name.
    pub fn forbidden_message(self, who: &str) -> String {
        format!("this {who} may not {}: {}", self.describe(), self.who_may())
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

    const ALL: [Action; 31] = Action::ALL;

    /// A word with an upper-case letter after a lower-case one: an enum name like
    /// `ApiKeysManage` leaking into a message.
    pub(crate) fn has_camel_case(text: &str) -> bool {
        text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
            w.as_bytes()
                .windows(2)
                .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase())
        })
    }

    #[test]
    fn forbidden_messages_say_in_words_what_is_missing_and_who_has_it() {
        for a in ALL {
            for who in ["user", "API key", "tenant token", "operator"] {
                let m = a.forbidden_message(who);
                assert!(!has_camel_case(&m), "{a:?}: {m}");
                assert!(!m.contains(&format!("{a:?}")), "{a:?}: {m}");
                assert!(m.contains(a.describe()), "{m}");
                assert!(
                    m.contains("needs") || m.contains("only the server operator"),
                    "{m}"
                );
            }
            // The roles and scopes the table allows are named.
            let r = rule_for(a);
            let m = a.forbidden_message("user");
            if let Some(role) = r.min_role {
                assert!(m.contains(role.as_str()), "{a:?}: {m}");
            }
            if let S(scope) = r.key {
                assert!(m.contains(scope.as_str()), "{a:?}: {m}");
            }
        }
        assert_eq!(
            Action::ApiKeysManage.forbidden_message("user"),
            "this user may not manage API keys: this needs the admin role or higher"
        );
        assert_eq!(
            Action::WorkspaceUpdate.forbidden_message("API key"),
            "this API key may not change this workspace's name, slug or settings: this needs \
             the admin role or higher, or an API key with the manage scope"
        );
        assert_eq!(
            Action::OrgBillingUpdate.forbidden_message("user"),
            "this user may not change an organization's plan, status or limits: only the \
             server operator may"
        );
        assert!(has_camel_case("x ApiKeysManage y") && !has_camel_case("API keys, admin"));
    }

    #[test]
    fn billing_is_the_operators() {
        assert!(permits(Subject::Operator, Action::OrgBillingUpdate));
        for role in [Viewer, Member, Admin, Owner] {
            assert!(!permits(Subject::Member(role), Action::OrgBillingUpdate));
        }
        assert!(!permits(
            Subject::Key(Scopes::all()),
            Action::OrgBillingUpdate
        ));
    }

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
