//! Which requests are audited (and under which action name, in which chain) and which are
//! counted as usage, decided from the method and the matched route template only.

use super::usage::RequestKind;

/// Which chain an action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The workspace's own trail (documents, agents, keys, embedder, settings).
    Workspace,
    /// The control plane's trail (orgs, members, workspaces created or deleted, providers,
    /// server administration).
    Control,
}

/// An audited request: its action name and chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub action: String,
    pub scope: Scope,
    /// The route's last `{param}` names the target (`agent` for `/agents/{id}`).
    target_kind: Option<&'static str>,
}

impl Classified {
    /// The target read from the (redacted) path: `<kind>:<last segment>` when the route ends
    /// in a parameter.
    pub fn target_from_path(&self, path: &str) -> Option<String> {
        let kind = self.target_kind?;
        let last = path.trim_end_matches('/').rsplit('/').next()?;
        // `/orgs/{org}/suspend`: the parameter is not the last segment.
        Some(format!("{kind}:{last}"))
    }
}

fn state_changing(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

/// The route without `/v1` and without a leading `/workspaces/{ws}` (data-plane routes exist
/// with and without it); and whether it had that prefix.
fn normalize(route: &str) -> (&str, bool) {
    let r = route.strip_prefix("/v1").unwrap_or(route);
    match r.strip_prefix("/workspaces/{ws}") {
        Some(rest) => (rest, true),
        None => (r, false),
    }
}

/// Requests that change nothing stored although they are not `GET`s: reads over `POST`,
/// protocol sessions kept in memory. (A sign-in and a tenant token's minting are audited: they
/// issue credentials, although only the session is stored.)
const NOT_STATE_CHANGING: &[&str] = &["/search", "/chat", "/mcp", "/openai/v1/chat/completions"];

/// The audit action of a request, or `None` when it is not audited: reads are not (except
/// the operator's: every operator request is recorded), nor the requests of
/// [`NOT_STATE_CHANGING`].
pub fn classify(method: &str, route: Option<&str>, operator: bool) -> Option<Classified> {
    let Some(route) = route else {
        // An unmatched path: only the operator's requests are recorded.
        return operator.then(|| Classified {
            action: format!("{method} (no such route)"),
            scope: Scope::Control,
            target_kind: None,
        });
    };
    let (r, ws_prefix) = normalize(route);
    // An export takes a workspace's data out: audited although it is a read.
    let export = method == "GET" && ws_prefix && r == "/export";
    let changes = export || (state_changing(method) && !NOT_STATE_CHANGING.contains(&r));
    if !changes {
        return operator.then(|| Classified {
            action: format!("{method} {route}"),
            scope: Scope::Control,
            target_kind: None,
        });
    }
    use Scope::{Control as C, Workspace as W};
    let known: Option<(&str, Scope, Option<&'static str>)> = match (method, r) {
        ("POST", "/documents") => Some(("document.add", W, None)),
        // One entry for the batch; its target names the counts (`record_target`).
        ("POST", "/documents/batch") => Some(("document.add_batch", W, None)),
        ("DELETE", "/documents/{id}") => Some(("document.delete", W, Some("document"))),
        ("POST", "/jobs/{id}/cancel") => Some(("job.cancel", W, Some("job"))),
        ("PUT", "/embedder") => Some(("embedder.set", W, None)),
        ("POST", "/agents") => Some(("agent.create", W, None)),
        ("PATCH", "/agents/{id}") => Some(("agent.update", W, Some("agent"))),
        ("DELETE", "/agents/{id}") => Some(("agent.delete", W, Some("agent"))),
        ("DELETE", "/sessions/{id}") => Some(("session.delete", W, Some("session"))),
        ("GET", "/export") => Some(("workspace.export", W, None)),
        ("POST", "/orgs/{org}/workspaces/import") => Some(("workspace.import", C, None)),
        ("POST", "/admin/backups") => Some(("backup.create", C, None)),
        ("POST", "/admin/restore") => Some(("backup.restore", C, None)),
        ("PATCH", "") if ws_prefix => Some(("workspace.update", W, None)),
        ("DELETE", "") if ws_prefix => Some(("workspace.delete", C, None)),
        ("POST", "/api-keys") => Some(("api_key.create", W, None)),
        ("DELETE", "/api-keys/{id}") => Some(("api_key.revoke", W, Some("api_key"))),
        ("POST", "/orgs") => Some(("org.create", C, None)),
        ("PATCH", "/orgs/{org}") => Some(("org.update", C, None)),
        ("DELETE", "/orgs/{org}") => Some(("org.delete", C, None)),
        ("POST", "/orgs/{org}/suspend") => Some(("org.suspend", C, None)),
        ("POST", "/orgs/{org}/reactivate") => Some(("org.reactivate", C, None)),
        ("POST", "/orgs/{org}/workspaces") => Some(("workspace.create", C, None)),
        ("PATCH", "/orgs/{org}/members/{user}") => Some(("member.update", C, Some("user"))),
        ("DELETE", "/orgs/{org}/members/{user}") => Some(("member.remove", C, Some("user"))),
        ("POST", "/orgs/{org}/invitations") => Some(("invitation.create", C, None)),
        ("POST", "/invitations/{token}/accept") => Some(("invitation.accept", C, None)),
        ("PUT", "/orgs/{org}/providers/{name}") => Some(("provider.set", C, Some("provider"))),
        ("DELETE", "/orgs/{org}/providers/{name}") => Some(("provider.clear", C, Some("provider"))),
        ("POST", "/auth/login") => Some(("session.login", C, None)),
        ("POST", "/auth/logout") => Some(("session.logout", C, None)),
        ("POST", "/tenant-tokens") => Some(("tenant_token.mint", W, None)),
        ("POST", "/admin/tenant-token-secret/rotate") => Some(("token_secret.rotate", C, None)),
        _ => None,
    };
    Some(match known {
        Some((action, scope, target_kind)) => Classified {
            action: action.to_string(),
            scope,
            target_kind,
        },
        // A route this table does not know yet is still recorded, under its template; in the
        // workspace's trail when it is a workspace route.
        None => Classified {
            action: format!("{method} {route}"),
            scope: if ws_prefix && !r.is_empty() { W } else { C },
            target_kind: None,
        },
    })
}

/// The usage kind of a request (counted when answered 2xx in a workspace).
pub fn request_kind(method: &str, route: &str) -> Option<RequestKind> {
    let (r, _) = normalize(route);
    match (method, r) {
        ("POST", "/search") => Some(RequestKind::Search),
        ("POST", "/chat") => Some(RequestKind::Chat),
        ("POST", "/documents" | "/documents/batch") => Some(RequestKind::Ingest),
        ("POST", "/mcp") => Some(RequestKind::Mcp),
        (_, r) if r.starts_with("/openai/") => Some(RequestKind::OpenAi),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_chains_come_from_the_route_template() {
        let c = |m: &str, r: &str| classify(m, Some(r), false);
        let doc = c("POST", "/v1/workspaces/{ws}/documents").expect("audited");
        assert_eq!(
            (doc.action.as_str(), doc.scope),
            ("document.add", Scope::Workspace)
        );
        assert_eq!(c("POST", "/v1/documents"), Some(doc));
        let batch = c("POST", "/v1/documents/batch").expect("audited");
        assert_eq!(
            (batch.action.as_str(), batch.scope),
            ("document.add_batch", Scope::Workspace)
        );
        assert_eq!(
            request_kind("POST", "/v1/workspaces/{ws}/documents/batch"),
            Some(RequestKind::Ingest)
        );
        let del = c("DELETE", "/v1/documents/{id}").expect("audited");
        assert_eq!(
            del.target_from_path("/v1/documents/abc").as_deref(),
            Some("document:abc")
        );
        assert_eq!(
            c("DELETE", "/v1/workspaces/{ws}").map(|c| c.scope),
            Some(Scope::Control)
        );
        assert_eq!(
            c("PATCH", "/v1/workspaces/{ws}").map(|c| c.scope),
            Some(Scope::Workspace)
        );
        assert_eq!(
            c("POST", "/v1/orgs/{org}/suspend").map(|c| c.action),
            Some("org.suspend".to_string())
        );
        // An export is audited in the workspace's trail; an import, a backup and a restore
        // from one in the control plane's.
        let export = c("GET", "/v1/workspaces/{ws}/export").expect("audited");
        assert_eq!(
            (export.action.as_str(), export.scope),
            ("workspace.export", Scope::Workspace)
        );
        for (route, action) in [
            ("/v1/orgs/{org}/workspaces/import", "workspace.import"),
            ("/v1/admin/backups", "backup.create"),
            ("/v1/admin/restore", "backup.restore"),
        ] {
            let got = c("POST", route).expect("audited");
            assert_eq!((got.action.as_str(), got.scope), (action, Scope::Control));
        }
        // Reads and read-like posts are not audited, except the operator's.
        assert_eq!(c("GET", "/v1/workspaces/{ws}/documents"), None);
        assert_eq!(c("POST", "/v1/workspaces/{ws}/search"), None);
        assert_eq!(c("POST", "/v1/chat"), None);
        // Credentials issued are audited: a sign-in, a tenant token minted.
        assert_eq!(
            c("POST", "/v1/tenant-tokens").map(|c| (c.action, c.scope)),
            Some(("tenant_token.mint".to_string(), Scope::Workspace))
        );
        assert_eq!(
            c("POST", "/v1/auth/login").map(|c| (c.action, c.scope)),
            Some(("session.login".to_string(), Scope::Control))
        );
        assert!(classify("GET", Some("/v1/orgs"), true).is_some());
        assert!(classify("GET", None, true).is_some());
        assert!(classify("GET", None, false).is_none());
        // A route the table does not know is recorded under its template.
        let new = c("POST", "/v1/workspaces/{ws}/restore").expect("audited");
        assert_eq!(new.action, "POST /v1/workspaces/{ws}/restore");
        assert_eq!(new.scope, Scope::Workspace);
        assert_eq!(
            c("POST", "/v1/admin/plans").map(|c| c.scope),
            Some(Scope::Control)
        );
    }

    #[test]
    fn usage_kinds() {
        assert_eq!(
            request_kind("POST", "/v1/workspaces/{ws}/search"),
            Some(RequestKind::Search)
        );
        assert_eq!(request_kind("POST", "/v1/chat"), Some(RequestKind::Chat));
        assert_eq!(
            request_kind("POST", "/v1/documents"),
            Some(RequestKind::Ingest)
        );
        assert_eq!(request_kind("GET", "/v1/documents"), None);
        assert_eq!(request_kind("POST", "/v1/mcp"), Some(RequestKind::Mcp));
        assert_eq!(
            request_kind("POST", "/v1/openai/v1/chat/completions"),
            Some(RequestKind::OpenAi)
        );
    }
}
