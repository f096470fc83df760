//! `GET /openapi.json`: the API contract (OpenAPI 3.1), built in this one module from the code.
//!
//! - Bodies: the JSON Schemas of request and response bodies are derived (`utoipa::ToSchema`)
//!   from the very types the handlers deserialize and the domain serializes, so a field added,
//!   renamed or made optional changes the document with it. Answers that handlers assemble with
//!   `json!` (lists, a created key with its secret, health) are described by the schema-only types
//!   at the end of this file; schemathesis checks the live answers against them in CI.
//! - Operations: one entry per (method, path) in [`describe`], in the order of
//!   `http::api_routes`. A unit test compares the operations with `http::route_table()` (what
//!   the router serves, recorded as it is built): a route served but not described, or described
//!   but not served, fails it. Path parameters come from the path template itself.
//! - Errors: every operation answers errors in the one shape of `http::error`
//!   (`{"error": {"code", "message"}}`, `code` one of `ErrorCode`), as `default` and for the
//!   statuses SPEC names.
//! - Security: four bearer schemes (operator token, session, API key, tenant token); each
//!   operation lists the ones it accepts (the permission table in the domain decides further).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::error::ErrorCode;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document().to_string(),
    )
}

/// Which credentials an operation accepts.
#[derive(Clone, Copy)]
enum Auth {
    /// No credential.
    None,
    /// No credential, or a session (accepting an invitation as a signed-in user).
    OptionalSession,
    /// The operator token only.
    Operator,
    /// The operator token or a user's session (org administration).
    User,
    /// Any credential.
    Any,
}

impl Auth {
    fn requirements(self) -> Option<Value> {
        let req = |names: &[&str]| Value::Array(names.iter().map(|n| json!({ *n: [] })).collect());
        match self {
            Auth::None => Some(json!([])),
            Auth::OptionalSession => Some(json!([{}, {"session": []}])),
            Auth::Operator => Some(req(&["operator"])),
            Auth::User => Some(req(&["operator", "session"])),
            Auth::Any => None, // the document's default
        }
    }
}

/// One operation: what [`Spec::op`] turns into an OpenAPI Operation Object.
struct Op {
    id: String,
    summary: &'static str,
    tag: &'static str,
    auth: Auth,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(u16, &'static str, Option<Value>)>,
}

fn op(tag: &'static str, id: &str, summary: &'static str) -> Op {
    Op {
        id: id.to_string(),
        summary,
        tag,
        auth: Auth::Any,
        params: Vec::new(),
        body: None,
        responses: Vec::new(),
    }
}

impl Op {
    fn auth(mut self, auth: Auth) -> Op {
        self.auth = auth;
        self
    }
    fn query(mut self, name: &str, schema: Value, description: &str) -> Op {
        self.params.push(json!({
            "name": name, "in": "query", "required": false,
            "schema": schema, "description": description,
        }));
        self
    }
    fn page(self) -> Op {
        self.query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": crate::control::MAX_PAGE}),
            "page size (default 100)",
        )
        .query(
            "offset",
            json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
            "rows to skip",
        )
    }
    fn header(mut self, name: &str, required: bool, description: &str) -> Op {
        self.params.push(json!({
            "name": name, "in": "header", "required": required,
            "schema": {"type": "string"}, "description": description,
        }));
        self
    }
    fn json_body(mut self, schema: Value) -> Op {
        self.body = Some(json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        }));
        self
    }
    fn body(mut self, body: Value) -> Op {
        self.body = Some(body);
        self
    }
    fn ok(mut self, status: u16, description: &'static str, schema: Value) -> Op {
        self.responses.push((
            status,
            description,
            Some(json!({"application/json": {"schema": schema}})),
        ));
        self
    }
    fn content(mut self, status: u16, description: &'static str, content: Value) -> Op {
        self.responses.push((status, description, Some(content)));
        self
    }
    fn empty(mut self, status: u16, description: &'static str) -> Op {
        self.responses.push((status, description, None));
        self
    }
}

/// The document under construction: paths and the schemas they reference.
struct Spec {
    paths: Map<String, Value>,
    schemas: Map<String, Value>,
}

impl Spec {
    /// Registers `T` (and the schemas it references) and returns a reference to it.
    fn schema<T: ToSchema>(&mut self) -> Value {
        let mut deps = Vec::new();
        T::schemas(&mut deps);
        deps.push((T::name().into_owned(), T::schema()));
        for (name, schema) in deps {
            self.schemas
                .entry(name)
                .or_insert_with(|| serde_json::to_value(schema).unwrap_or(Value::Null));
        }
        json!({"$ref": format!("#/components/schemas/{}", T::name())})
    }

    /// `{"data": [T]}`, the shape of every list.
    fn list<T: ToSchema>(&mut self) -> Value {
        let item = self.schema::<T>();
        json!({
            "type": "object", "required": ["data"],
            "properties": {"data": {"type": "array", "items": item}},
        })
    }

    fn op(&mut self, method: &str, path: &str, op: Op) {
        let mut params: Vec<Value> = path_params(path)
            .into_iter()
            .map(|name| {
                json!({
                    "name": name, "in": "path", "required": true,
                    "schema": path_param_schema(name),
                    "description": path_param_description(name),
                })
            })
            .collect();
        params.extend(op.params);
        let mut responses = Map::new();
        for (status, description, content) in op.responses {
            let mut r = json!({ "description": description });
            if let Some(c) = content {
                r["content"] = c;
            }
            responses.insert(status.to_string(), r);
        }
        for status in error_statuses(op.auth) {
            responses
                .entry(status.to_string())
                .or_insert_with(|| json!({"$ref": "#/components/responses/Error"}));
        }
        responses.insert(
            "default".into(),
            json!({"$ref": "#/components/responses/Error"}),
        );
        let mut o = json!({
            "operationId": op.id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": responses,
        });
        if !params.is_empty() {
            o["parameters"] = Value::Array(params);
        }
        if let Some(b) = op.body {
            o["requestBody"] = b;
        }
        if let Some(s) = op.auth.requirements() {
            o["security"] = s;
        }
        let item = self
            .paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}));
        item[method.to_ascii_lowercase()] = o;
    }
}

/// The statuses an operation may answer with an error body, by what it accepts.
fn error_statuses(auth: Auth) -> Vec<u16> {
    let mut s = vec![400, 404, 408, 413, 422, 429, 503, 507];
    match auth {
        Auth::None => {}
        Auth::OptionalSession => s.extend([401, 409]),
        _ => s.extend([401, 403, 409]),
    }
    s.sort_unstable();
    s
}

/// The `{name}`s of a path template, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn path_param_schema(name: &str) -> Value {
    match name {
        "ws" | "user" => json!({"type": "string", "format": "uuid"}),
        _ => json!({"type": "string", "minLength": 1}),
    }
}

fn path_param_description(name: &str) -> &'static str {
    match name {
        "ws" => "workspace id",
        "org" => "organization id or slug",
        "user" => "user id",
        "token" => "invitation token",
        "name" => "provider name (`openai-compatible`)",
        "model" => "model: an agent's id or slug",
        "plan" => "plan id (free, team, enterprise or a custom one)",
        "slug" => "workspace slug (unique within its organization)",
        _ => "id",
    }
}

/// Every code of [`ErrorCode`] (the match makes a new variant a compile error here).
fn error_codes() -> Vec<&'static str> {
    use ErrorCode::*;
    let all = [
        InvalidRequest,
        Unauthenticated,
        Forbidden,
        TenantSuspended,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        RateLimited,
        QuotaExceeded,
        RequestTimeout,
        ProviderError,
        Unavailable,
        InsufficientStorage,
        Internal,
    ];
    for c in all {
        match c {
            InvalidRequest | Unauthenticated | Forbidden | TenantSuspended | NotFound
            | Conflict | PayloadTooLarge | UnsupportedMediaType | RateLimited | QuotaExceeded
            | RequestTimeout | ProviderError | Unavailable | InsufficientStorage | Internal => {}
        }
    }
    all.iter().map(|c| c.as_str()).collect()
}

fn build() -> Value {
    let mut spec = Spec {
        paths: Map::new(),
        schemas: Map::new(),
    };
    describe(&mut spec);
    spec.schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": error_codes()},
                    "message": {"type": "string", "description": "what to change, in a sentence"},
                    "resource": {"type": "string", "description": "quota_exceeded: the limit reached (workspaces, documents, ...)"},
                    "limit": {"type": "integer", "description": "quota_exceeded: the plan's limit"},
                    "used": {"type": "integer", "description": "quota_exceeded: what was used when the request came"},
                },
            }},
        }),
    );
    let bearer = |format: &str, description: &str| json!({"type": "http", "scheme": "bearer", "bearerFormat": format, "description": description});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Enclave",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted multi-tenant knowledge base and agent platform. Every \
                error answers `{\"error\": {\"code\", \"message\"}}`. Data-plane routes exist \
                under `/v1/workspaces/{ws}/...` and, for API keys and tenant tokens (which bring \
                their workspace), under `/v1/...`.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"operator": []}, {"session": []}, {"api_key": []}, {"tenant_token": []}],
        "paths": spec.paths,
        "components": {
            "schemas": spec.schemas,
            "responses": {"Error": {
                "description": "an error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }},
            "securitySchemes": {
                "operator": bearer("enc_op_…", "the operator token, printed on first start"),
                "session": bearer("enc_sess_…", "a user's session, from POST /v1/auth/login"),
                "api_key": bearer("enc_key_…", "a workspace API key with scopes"),
                "tenant_token": bearer("JWT", "an HS256 tenant token minted from an API key: \
                    one workspace, read scopes, an optional metadata filter"),
            },
        },
    })
}

/// Every operation, in the order of `http::api_routes`.
fn describe(s: &mut Spec) {
    use super::chat::ChatBody;
    use super::knowledge::NewDocumentBody;
    use super::members::{AcceptBody, InviteBody, RoleBody};
    use super::openai::CompletionRequest;
    use super::session::LoginBody;
    use crate::chat::providers::{ProviderInput, ProviderView};
    use crate::chat::{Agent, AgentPatch, ChatAnswer, NewAgent};
    use crate::control::{
        ApiKey, Invitation, Member, NewOrg, NewWorkspace, Org, OrgPatch, WorkspacePatch,
        WorkspaceRecord,
    };
    use crate::identity::{LoginResult, MintedToken, NewApiKey, NewTenantToken, OrgWithRole};
    use crate::knowledge::service::EmbedderView;
    use crate::knowledge::{
        Added, DocumentView, EmbedderConfig, JobView, SearchRequest, SearchResponse,
    };
    use crate::tenancy::WorkspaceView;

    // System.
    let health = s.schema::<Health>();
    s.op(
        "GET",
        "/healthz",
        op("system", "healthz", "The process answers")
            .auth(Auth::None)
            .ok(200, "alive", health),
    );
    let ready = s.schema::<Readiness>();
    s.op(
        "GET",
        "/readyz",
        op(
            "system",
            "readyz",
            "The server can serve (control plane reachable, not draining)",
        )
        .auth(Auth::None)
        .ok(200, "ready", ready.clone())
        .ok(503, "not ready", ready),
    );
    s.op(
        "GET",
        "/metrics",
        op(
            "system",
            "metrics",
            "Prometheus metrics (aggregate numbers, no tenant ids)",
        )
        .auth(Auth::None)
        .content(
            200,
            "metrics in the Prometheus text format",
            json!({"text/plain": {"schema": {"type": "string"}}}),
        ),
    );
    s.op(
        "GET",
        "/openapi.json",
        op("system", "openapi", "This document")
            .auth(Auth::None)
            .ok(200, "the OpenAPI 3.1 document", json!({"type": "object"})),
    );

    // Sessions.
    let login = s.schema::<LoginBody>();
    let login_result = s.schema::<LoginResult>();
    s.op(
        "POST",
        "/v1/auth/login",
        op(
            "auth",
            "login",
            "Sign in with email and password; returns a session token",
        )
        .auth(Auth::None)
        .json_body(login)
        .ok(200, "signed in", login_result)
        .empty(401, "wrong email or password"),
    );
    s.op(
        "POST",
        "/v1/auth/logout",
        op("auth", "logout", "End the session of the credential").empty(204, "signed out"),
    );
    let me = s.schema::<Me>();
    s.op(
        "GET",
        "/v1/me",
        op("auth", "me", "Who the credential is").ok(200, "the principal", me),
    );

    // Orgs.
    let (new_org, org, org_patch) = (
        s.schema::<NewOrg>(),
        s.schema::<Org>(),
        s.schema::<OrgPatch>(),
    );
    s.op(
        "POST",
        "/v1/orgs",
        op("orgs", "createOrg", "Create an organization")
            .auth(Auth::Operator)
            .json_body(new_org)
            .ok(201, "created", org.clone()),
    );
    let orgs = s.list::<OrgWithRole>();
    s.op(
        "GET",
        "/v1/orgs",
        op(
            "orgs",
            "listOrgs",
            "Organizations the credential reaches (with the user's role)",
        )
        .page()
        .ok(200, "the organizations", orgs),
    );
    s.op(
        "GET",
        "/v1/orgs/{org}",
        op("orgs", "getOrg", "An organization").auth(Auth::User).ok(
            200,
            "the organization",
            org.clone(),
        ),
    );
    s.op(
        "PATCH",
        "/v1/orgs/{org}",
        op(
            "orgs",
            "patchOrg",
            "Change an organization (plan: operator only)",
        )
        .auth(Auth::User)
        .json_body(org_patch)
        .ok(200, "changed", org.clone()),
    );
    s.op(
        "DELETE",
        "/v1/orgs/{org}",
        op(
            "orgs",
            "deleteOrg",
            "Delete an organization and its workspaces (kept for the grace period, restorable)",
        )
        .auth(Auth::User)
        .query(
            "purge",
            json!({"type": "boolean"}),
            "the operator's: purge at once instead of after the grace period",
        )
        .empty(204, "deleted"),
    );
    s.op(
        "POST",
        "/v1/orgs/{org}/suspend",
        op("orgs", "suspendOrg", "Suspend an organization")
            .auth(Auth::User)
            .ok(200, "suspended", org.clone()),
    );
    s.op(
        "POST",
        "/v1/orgs/{org}/reactivate",
        op(
            "orgs",
            "reactivateOrg",
            "Reactivate a suspended organization",
        )
        .auth(Auth::User)
        .ok(200, "active", org),
    );
    let (new_ws, ws_record) = (s.schema::<NewWorkspace>(), s.schema::<WorkspaceRecord>());
    s.op(
        "POST",
        "/v1/orgs/{org}/workspaces",
        op(
            "workspaces",
            "createWorkspace",
            "Create a workspace in an organization",
        )
        .auth(Auth::User)
        .json_body(new_ws)
        .ok(201, "created", ws_record.clone()),
    );
    let workspaces = s.list::<WorkspaceRecord>();
    s.op(
        "GET",
        "/v1/orgs/{org}/workspaces",
        op(
            "workspaces",
            "listWorkspaces",
            "An organization's workspaces",
        )
        .auth(Auth::User)
        .page()
        .ok(200, "the workspaces", workspaces),
    );
    s.op(
        "GET",
        "/v1/orgs/{org}/workspaces/{slug}",
        op(
            "workspaces",
            "getWorkspaceBySlug",
            "An organization's workspace, found by its slug",
        )
        .auth(Auth::User)
        .ok(200, "the workspace", ws_record.clone()),
    );

    // Members and invitations.
    let members = s.list::<Member>();
    s.op(
        "GET",
        "/v1/orgs/{org}/members",
        op("members", "listMembers", "An organization's members")
            .auth(Auth::User)
            .ok(200, "the members", members),
    );
    let (role_body, member) = (s.schema::<RoleBody>(), s.schema::<Member>());
    s.op(
        "PATCH",
        "/v1/orgs/{org}/members/{user}",
        op("members", "changeMemberRole", "Change a member's role")
            .auth(Auth::User)
            .json_body(role_body)
            .ok(200, "changed", member),
    );
    s.op(
        "DELETE",
        "/v1/orgs/{org}/members/{user}",
        op("members", "removeMember", "Remove a member")
            .auth(Auth::User)
            .empty(204, "removed"),
    );
    let invite = s.schema::<InviteBody>();
    let invitation = s.schema::<Invitation>();
    s.op(
        "POST",
        "/v1/orgs/{org}/invitations",
        op(
            "members",
            "invite",
            "Invite someone by email; the answer carries the token once",
        )
        .auth(Auth::User)
        .json_body(invite)
        .ok(201, "invited", with_secret(invitation, "token")),
    );
    let (accept, accepted) = (s.schema::<AcceptBody>(), s.schema::<Accepted>());
    s.op(
        "POST",
        "/v1/invitations/{token}/accept",
        op(
            "members",
            "acceptInvitation",
            "Accept an invitation (a new user gives a password)",
        )
        .auth(Auth::OptionalSession)
        .json_body(accept)
        .ok(200, "joined as an existing user", accepted.clone())
        .ok(201, "joined as a new user, signed in", accepted),
    );

    // Workspaces.
    let (ws_view, ws_patch) = (s.schema::<WorkspaceView>(), s.schema::<WorkspacePatch>());
    s.op(
        "GET",
        "/v1/workspaces/{ws}",
        op(
            "workspaces",
            "getWorkspace",
            "A workspace with its live statistics",
        )
        .ok(200, "the workspace", ws_view),
    );
    s.op(
        "PATCH",
        "/v1/workspaces/{ws}",
        op("workspaces", "patchWorkspace", "Change a workspace")
            .json_body(ws_patch)
            .ok(200, "changed", ws_record),
    );
    s.op(
        "DELETE",
        "/v1/workspaces/{ws}",
        op(
            "workspaces",
            "deleteWorkspace",
            "Delete a workspace (kept for the grace period, restorable)",
        )
        .query(
            "purge",
            json!({"type": "boolean"}),
            "the operator's: purge at once instead of after the grace period",
        )
        .empty(204, "deleted"),
    );

    // API keys and tenant tokens.
    let (new_key, key) = (s.schema::<NewApiKey>(), s.schema::<ApiKey>());
    s.op(
        "POST",
        "/v1/workspaces/{ws}/api-keys",
        op(
            "keys",
            "createApiKey",
            "Create an API key; the answer carries the secret once",
        )
        .json_body(new_key)
        .ok(201, "created", with_secret(key, "key")),
    );
    let keys = s.list::<ApiKey>();
    s.op(
        "GET",
        "/v1/workspaces/{ws}/api-keys",
        op(
            "keys",
            "listApiKeys",
            "A workspace's API keys (never their secrets)",
        )
        .ok(200, "the keys", keys),
    );
    s.op(
        "DELETE",
        "/v1/workspaces/{ws}/api-keys/{id}",
        op("keys", "revokeApiKey", "Revoke an API key").empty(204, "revoked"),
    );
    let (new_token, minted) = (s.schema::<NewTenantToken>(), s.schema::<MintedToken>());
    for (path, id) in [
        ("/v1/workspaces/{ws}/tenant-tokens", "mintTenantToken"),
        ("/v1/tenant-tokens", "mintTenantTokenOfKey"),
    ] {
        s.op(
            "POST",
            path,
            op(
                "keys",
                id,
                "Mint a tenant token (end-user scopes, an optional filter)",
            )
            .json_body(new_token.clone())
            .ok(201, "minted", minted.clone()),
        );
    }

    // Providers.
    let providers = s.list::<ProviderView>();
    s.op(
        "GET",
        "/v1/orgs/{org}/providers",
        op(
            "providers",
            "listProviders",
            "An organization's model providers (keys never shown)",
        )
        .auth(Auth::User)
        .ok(200, "the providers", providers),
    );
    let (provider_in, provider) = (s.schema::<ProviderInput>(), s.schema::<ProviderView>());
    s.op(
        "PUT",
        "/v1/orgs/{org}/providers/{name}",
        op(
            "providers",
            "setProvider",
            "Set a model provider (base URL, model, key)",
        )
        .auth(Auth::User)
        .json_body(provider_in)
        .ok(200, "set", provider),
    );
    s.op(
        "DELETE",
        "/v1/orgs/{org}/providers/{name}",
        op("providers", "deleteProvider", "Remove a model provider")
            .auth(Auth::User)
            .empty(204, "removed"),
    );

    // Audit trails and usage (governance).
    let audit = s.list::<crate::governance::audit::Entry>();
    let trails: [(&str, &str, &str, Auth, bool); 3] = [
        (
            "/v1/admin/audit",
            "listAudit",
            "The control plane's audit trail (every org, or one)",
            Auth::Operator,
            true,
        ),
        (
            "/v1/orgs/{org}/audit",
            "listOrgAudit",
            "An organization's audit trail (org admins)",
            Auth::User,
            false,
        ),
        (
            "/v1/workspaces/{ws}/audit",
            "listWorkspaceAudit",
            "A workspace's audit trail (org admins)",
            Auth::User,
            false,
        ),
    ];
    for (path, id, summary, auth, org_filter) in trails {
        let mut o = op("audit", id, summary).auth(auth);
        if org_filter {
            o = o.query(
                "org",
                json!({"type": "string"}),
                "an organization id or slug",
            );
        }
        let o = o
            .query(
                "actor",
                json!({"type": "string"}),
                "an actor kind (user, api_key, tenant_token, operator, cli) or an actor id",
            )
            .query(
                "action",
                json!({"type": "string"}),
                "an action (document.add) or a prefix ending in * (document.*)",
            )
            .query(
                "from",
                json!({"type": "string"}),
                "RFC 3339 time or YYYY-MM-DD, inclusive",
            )
            .query(
                "to",
                json!({"type": "string"}),
                "RFC 3339 time or YYYY-MM-DD, exclusive",
            )
            .page()
            .ok(200, "entries, newest first", audit.clone());
        s.op("GET", path, o);
    }
    let usage_rows = json!({
        "type": "object", "required": ["data"],
        "properties": {"data": {"type": "array", "items": {
            "type": "object", "required": ["org_id", "period"],
            "properties": {
                "org_id": {"type": "string", "format": "uuid"},
                "workspace_id": {"type": "string", "format": "uuid"},
                "period": {"type": "string", "description": "YYYY-MM-DD or YYYY-MM"},
            },
            "additionalProperties": {"type": "integer", "minimum": 0},
        }}},
    });
    let usage_content = json!({
        "application/json": {"schema": usage_rows},
        "text/csv": {"schema": {"type": "string"}},
    });
    let usages: [(&str, &str, &str, Auth, bool); 2] = [
        (
            "/v1/admin/usage",
            "adminUsage",
            "Usage across organizations (or one)",
            Auth::Operator,
            true,
        ),
        (
            "/v1/orgs/{org}/usage",
            "orgUsage",
            "An organization's usage (org admins)",
            Auth::User,
            false,
        ),
    ];
    for (path, id, summary, auth, org_filter) in usages {
        let mut o = op("usage", id, summary).auth(auth);
        if org_filter {
            o = o.query(
                "org",
                json!({"type": "string"}),
                "an organization id or slug",
            );
        }
        let o = o
            .query(
                "from",
                json!({"type": "string", "format": "date"}),
                "first day (YYYY-MM-DD), default: the month's first",
            )
            .query(
                "to",
                json!({"type": "string", "format": "date"}),
                "last day (YYYY-MM-DD), default: today",
            )
            .query(
                "granularity",
                json!({"type": "string", "enum": ["day", "month"]}),
                "rows per day (default) or per month",
            )
            .query(
                "workspace",
                json!({"type": "string", "format": "uuid"}),
                "one workspace's rows",
            )
            .query(
                "group",
                json!({"type": "string", "enum": ["org", "workspace"]}),
                "one row per org (default) or per workspace",
            )
            .query(
                "format",
                json!({"type": "string", "enum": ["json", "csv"]}),
                "instead of the Accept header",
            )
            .content(
                200,
                "usage rows: JSON, or CSV for Accept: text/csv",
                usage_content.clone(),
            );
        s.op("GET", path, o);
    }

    // Plans, limits and the lifecycle (governance, issue 12 part A).
    describe_plans(s);

    // Archives, backups and restores (durability, issue 13).
    describe_durability(s);

    // Operator.
    let rotated = s.schema::<Rotated>();
    s.op(
        "POST",
        "/v1/admin/tenant-token-secret/rotate",
        op(
            "admin",
            "rotateTokenSecret",
            "Rotate the tenant-token signing secret",
        )
        .auth(Auth::Operator)
        .query(
            "retire_previous",
            json!({"type": "boolean"}),
            "stop accepting tokens signed with the previous secret at once",
        )
        .ok(200, "rotated", rotated),
    );

    // The data plane, with `{ws}` and without (the workspace of the API key or tenant token).
    let new_doc = s.schema::<NewDocumentBody>();
    let batch_added = s.schema::<crate::knowledge::bulk::BatchAdded>();
    let (added, doc, doc_created) = (
        s.schema::<Added>(),
        s.schema::<DocumentView>(),
        s.schema::<DocumentCreated>(),
    );
    let docs = s.list::<DocumentView>();
    let doc_status = s.schema::<crate::knowledge::status::DocumentStatus>();
    let (jobs, job) = (s.list::<JobView>(), s.schema::<JobView>());
    let (search, results) = (s.schema::<SearchRequest>(), s.schema::<SearchResponse>());
    let (embedder_in, embedder) = (s.schema::<EmbedderConfig>(), s.schema::<EmbedderView>());
    let (agents, agent) = (s.list::<Agent>(), s.schema::<Agent>());
    let (new_agent, agent_patch) = (s.schema::<NewAgent>(), s.schema::<AgentPatch>());
    let sessions = s.list::<crate::chat::Session>();
    let messages = s.list::<crate::chat::Message>();
    let (chat_body, answer) = (s.schema::<ChatBody>(), s.schema::<ChatAnswer>());
    let (models, model) = (s.schema::<ModelList>(), s.schema::<Model>());
    let (completion_in, completion) = (
        s.schema::<CompletionRequest>(),
        s.schema::<ChatCompletion>(),
    );
    // The MCP transport answers JSON-RPC messages, also for its own errors.
    let rpc = json!({
        "type": "object",
        "required": ["jsonrpc"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer", "null"]},
            "result": {},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            },
        },
    });
    let rpc_or_error = json!({"anyOf": [{"$ref": "#/components/schemas/Error"}, rpc]});
    // Server-Sent Events: the schema of one event (its `data` a JSON text, or `[DONE]`).
    let sse = |events: Option<&[&str]>, description: &str| {
        let mut event = json!({
            "type": "object",
            "required": ["data"],
            "description": description,
            "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        });
        if let Some(names) = events {
            event["required"] = json!(["event", "data"]);
            event["properties"]["event"] = json!({"type": "string", "enum": names});
        }
        json!({"text/event-stream": {"schema": event}})
    };
    for (prefix, suffix) in [("/v1/workspaces/{ws}", ""), ("/v1", "OfKey")] {
        let at = |p: &str| format!("{prefix}{p}");
        let id = |name: &str| format!("{name}{suffix}");
        let tenant = |o: Op| {
            if suffix.is_empty() {
                o
            } else {
                o.header(
                    "X-Tenant-ID",
                    false,
                    "the workspace meant; must be the credential's",
                )
            }
        };
        s.op(
            "POST",
            &at("/documents"),
            tenant(op(
                "documents",
                &id("addDocument"),
                "Add a document (text as JSON, or a file as multipart)",
            ))
            .query(
                "wait",
                json!({"type": "boolean"}),
                "answer when the document is indexed (201), up to a bound",
            )
            .body(json!({
                "required": true,
                "content": {
                    "application/json": {"schema": new_doc},
                    "multipart/form-data": {"schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "metadata": {"type": "string", "description": "a JSON object"},
                            "title": {"type": "string"},
                            "external_id": {"type": "string"},
                        },
                        "additionalProperties": false,
                    }},
                },
            }))
            .ok(200, "the same content was there already", added.clone())
            .ok(201, "indexed (with ?wait=true)", doc_created.clone())
            .ok(202, "queued", added.clone()),
        );
        s.op(
            "POST",
            &at("/documents/batch"),
            tenant(op(
                "documents",
                &id("addDocuments"),
                "Add documents in one batch (a JSON array, or NDJSON: one a line), indexed when \
                 it answers; atomic: a refused item refuses the batch, naming its index",
            ))
            .body(json!({
                "required": true,
                "content": {
                    "application/json": {"schema": {
                        "type": "array", "minItems": 1, "items": new_doc,
                        "description": "at most max_batch_documents (default 1000) documents, \
                            the body at most max_batch_bytes (default 32 MiB)",
                    }},
                    "application/x-ndjson": {"schema": {
                        "type": "string",
                        "description": "one document object (as in the JSON array) a line",
                    }},
                },
            }))
            .ok(
                200,
                "every item's result, in order, and the counts",
                batch_added.clone(),
            ),
        );
        s.op(
            "GET",
            &at("/documents"),
            tenant(op(
                "documents",
                &id("listDocuments"),
                "A workspace's documents",
            ))
            .page()
            .query(
                "status",
                doc_status.clone(),
                "only documents in this status",
            )
            .ok(200, "the documents", docs.clone()),
        );
        s.op(
            "GET",
            &at("/documents/{id}"),
            tenant(op(
                "documents",
                &id("getDocument"),
                "A document (by id or external id)",
            ))
            .ok(200, "the document", doc.clone()),
        );
        s.op(
            "DELETE",
            &at("/documents/{id}"),
            tenant(op("documents", &id("deleteDocument"), "Delete a document"))
                .empty(204, "deleted"),
        );
        s.op(
            "GET",
            &at("/jobs"),
            tenant(op("jobs", &id("listJobs"), "A workspace's jobs"))
                .page()
                .ok(200, "the jobs", jobs.clone()),
        );
        s.op(
            "GET",
            &at("/jobs/{id}"),
            tenant(op("jobs", &id("getJob"), "A job")).ok(200, "the job", job.clone()),
        );
        s.op(
            "POST",
            &at("/jobs/{id}/cancel"),
            tenant(op("jobs", &id("cancelJob"), "Cancel a job")).ok(200, "the job", job.clone()),
        );
        s.op(
            "POST",
            &at("/search"),
            tenant(op(
                "search",
                &id("search"),
                "Search (full text, vector or hybrid)",
            ))
            .json_body(search.clone())
            .ok(
                200,
                "the results, best first; results whose text is the same or nearly the same as a better one's are collapsed into its `duplicates` (`limit` counts distinct results). `score`: hybrid, the fused score in [0, 1] (comparable within one query); fulltext, BM25 (≥ 0); vector, cosine similarity (−1 to 1). `explain: true` adds each list's rank and raw score and the fused components",
                results.clone(),
            ),
        );
        s.op(
            "GET",
            &at("/embedder"),
            tenant(op("search", &id("getEmbedder"), "The workspace's embedder")).ok(
                200,
                "the embedder",
                embedder.clone(),
            ),
        );
        s.op(
            "PUT",
            &at("/embedder"),
            tenant(op(
                "search",
                &id("setEmbedder"),
                "Switch the embedder (re-embeds in the background)",
            ))
            .json_body(embedder_in.clone())
            .ok(200, "the embedder", embedder.clone()),
        );
        s.op(
            "GET",
            &at("/agents"),
            tenant(op(
                "agents",
                &id("listAgents"),
                "The agents the caller can see",
            ))
            .page()
            .ok(200, "the agents", agents.clone()),
        );
        s.op(
            "POST",
            &at("/agents"),
            tenant(op("agents", &id("createAgent"), "Create an agent"))
                .json_body(new_agent.clone())
                .ok(201, "created", agent.clone()),
        );
        s.op(
            "GET",
            &at("/agents/{id}"),
            tenant(op("agents", &id("getAgent"), "An agent (by id or slug)")).ok(
                200,
                "the agent",
                agent.clone(),
            ),
        );
        s.op(
            "PATCH",
            &at("/agents/{id}"),
            tenant(op("agents", &id("patchAgent"), "Change an agent"))
                .json_body(agent_patch.clone())
                .ok(200, "changed", agent.clone()),
        );
        s.op(
            "DELETE",
            &at("/agents/{id}"),
            tenant(op("agents", &id("deleteAgent"), "Delete an agent")).empty(204, "deleted"),
        );
        s.op(
            "GET",
            &at("/sessions"),
            tenant(op(
                "chat",
                &id("listSessions"),
                "The caller's chat sessions",
            ))
            .page()
            .ok(200, "the sessions", sessions.clone()),
        );
        s.op(
            "GET",
            &at("/sessions/{id}/messages"),
            tenant(op(
                "chat",
                &id("sessionMessages"),
                "A chat session's messages",
            ))
            .page()
            .ok(200, "the messages", messages.clone()),
        );
        s.op(
            "POST",
            &at("/chat"),
            tenant(op(
                "chat",
                &id("chat"),
                "Ask an agent (JSON, or Server-Sent Events with stream)",
            ))
            .json_body(chat_body.clone())
            .content(
                200,
                "the answer",
                json!({
                    "application/json": {"schema": answer.clone()},
                    "text/event-stream": sse(
                        Some(&["session", "delta", "tool", "citations", "done", "error"]),
                        "session, then deltas and tools, then citations and done (or error)",
                    )["text/event-stream"],
                }),
            ),
        );
        s.op(
            "POST",
            &at("/mcp"),
            tenant(op(
                "mcp",
                &id("mcpPost"),
                "MCP Streamable HTTP: a JSON-RPC message",
            ))
            .header(
                "Mcp-Session-Id",
                false,
                "the MCP session (after initialize)",
            )
            .header(
                "Mcp-Protocol-Version",
                false,
                "the negotiated protocol version",
            )
            .json_body(json!({"type": ["object", "array"]}))
            .ok(200, "the JSON-RPC answer", rpc.clone())
            .empty(202, "a notification or response was accepted")
            .ok(
                400,
                "a JSON-RPC error (or an Enclave error before it)",
                rpc_or_error.clone(),
            )
            .ok(
                404,
                "unknown MCP session (or an Enclave error)",
                rpc_or_error.clone(),
            ),
        );
        s.op(
            "GET",
            &at("/mcp"),
            tenant(op(
                "mcp",
                &id("mcpGet"),
                "No server-initiated stream is offered",
            ))
            .content(
                405,
                "always: POST JSON-RPC messages",
                json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}),
            ),
        );
        s.op(
            "DELETE",
            &at("/mcp"),
            tenant(op("mcp", &id("mcpDelete"), "End an MCP session"))
                .header("Mcp-Session-Id", true, "the MCP session to end")
                .empty(204, "ended"),
        );
        s.op(
            "GET",
            &at("/openai/v1/models"),
            tenant(op(
                "openai",
                &id("openaiModels"),
                "OpenAI-compatible: the agents as models",
            ))
            .ok(200, "the models", models.clone()),
        );
        s.op(
            "GET",
            &at("/openai/v1/models/{model}"),
            tenant(op(
                "openai",
                &id("openaiModel"),
                "OpenAI-compatible: one agent as a model",
            ))
            .ok(200, "the model", model.clone()),
        );
        s.op(
            "POST",
            &at("/openai/v1/chat/completions"),
            tenant(op("openai", &id("openaiChatCompletions"), "OpenAI-compatible chat completion"))
                .json_body(completion_in.clone())
                .content(
                    200,
                    "the completion (or chunks as Server-Sent Events with stream)",
                    json!({
                        "application/json": {"schema": completion.clone()},
                        "text/event-stream": sse(None, "chat.completion.chunk objects, then [DONE]")["text/event-stream"],
                    }),
                ),
        );
    }
}

/// `schema` with one more required string property (a secret shown once).
/// Workspace archives (export, import), the server's backups and a workspace's restore from
/// one (issue 13). Bodies and answers are written here: the request types are `durability`'s.
fn describe_durability(s: &mut Spec) {
    let ws_record = s.schema::<crate::control::WorkspaceRecord>();
    let tar = |description: &str| {
        json!({"application/x-tar": {"schema": {"type": "string", "format": "binary",
            "description": description}}})
    };
    s.op(
        "GET",
        "/v1/workspaces/{ws}/export",
        op(
            "archives",
            "exportWorkspace",
            "The workspace as a tar archive (documents, chunks, vectors, agents, chats, audit, originals)",
        )
        .content(200, "the archive, streamed", tar("a workspace archive")),
    );
    s.op(
        "POST",
        "/v1/orgs/{org}/workspaces/import",
        op(
            "archives",
            "importWorkspace",
            "Create a workspace in an organization from an archive sent as the request body",
        )
        .auth(Auth::User)
        .query("name", json!({"type": "string", "minLength": 1}), "the new workspace's name (default: the archived one)")
        .query("slug", json!({"type": "string", "minLength": 1}), "its slug (default: the archived one)")
        .body(json!({"required": true, "content": {
            "application/x-tar": tar("an archive made by GET /v1/workspaces/{ws}/export")["application/x-tar"].clone(),
            // The body is read as bytes whatever its declared type.
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }}))
        .ok(201, "imported", ws_record.clone()),
    );
    let target = json!({"type": "string", "minLength": 1,
        "description": "a folder on the server's machine, or s3://bucket/prefix"});
    let uuid = json!({"type": "string", "format": "uuid"});
    s.op(
        "POST",
        "/v1/admin/backups",
        op(
            "backups",
            "createBackup",
            "Back up the data directory (or one workspace)",
        )
        .auth(Auth::Operator)
        .json_body(
            json!({"type": "object", "required": ["to"], "additionalProperties": false,
                "properties": {"to": target.clone(), "workspace": uuid.clone()}}),
        )
        .ok(
            201,
            "the backup written",
            json!({"type": "object",
            "required": ["id", "target", "workspaces", "workspaces_snapshotted",
                "objects_uploaded", "bytes_uploaded", "bytes_total", "seconds", "failed"],
            "properties": {
                "id": {"type": "string"}, "target": {"type": "string"},
                "workspaces": {"type": "integer", "minimum": 0},
                "workspaces_snapshotted": {"type": "integer", "minimum": 0},
                "objects_uploaded": {"type": "integer", "minimum": 0},
                "bytes_uploaded": {"type": "integer", "minimum": 0},
                "bytes_total": {"type": "integer", "minimum": 0},
                "seconds": {"type": "number"},
                "failed": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "workspaces left out, by id, with the reason"},
            }}),
        ),
    );
    s.op(
        "POST",
        "/v1/admin/restore",
        op(
            "backups",
            "restoreFromBackup",
            "Restore one workspace of a backup: over the live workspace of that id, or as a new workspace",
        )
        .auth(Auth::Operator)
        .json_body(json!({"type": "object", "required": ["from", "workspace"],
            "additionalProperties": false,
            "properties": {
                "from": target,
                "backup": {"type": "string", "minLength": 1, "description": "default: the latest"},
                "workspace": uuid,
                "org": {"type": "string", "minLength": 1, "description": "when restored as a new workspace: its org (id or slug)"},
                "slug": {"type": "string", "minLength": 1, "description": "when restored as a new workspace: its slug"},
            }}))
        .ok(200, "restored", ws_record),
    );
}

/// Plans, an org's limits, deleted orgs and workspaces, restores (issue 12 part A). Their
/// types serialize by hand (limits keyed by name), so their schemas are written here.
fn describe_plans(s: &mut Spec) {
    use crate::control::limits::{Limit, MAX_PRIORITY, PRIORITY_KEY};
    let limit =
        json!({"type": ["integer", "null"], "minimum": 0, "description": "null: unlimited"});
    let mut props = Map::new();
    for l in Limit::ALL {
        props.insert(l.as_str().into(), limit.clone());
    }
    let priority = json!({"type": "integer", "minimum": 1, "maximum": MAX_PRIORITY,
        "description": "the org's weight in the job scheduler"});
    let mut all = props.clone();
    all.insert(PRIORITY_KEY.into(), priority.clone());
    let required: Vec<Value> = all.keys().map(|k| json!(k)).collect();
    s.schemas.insert(
        "Limits".into(),
        json!({"type": "object", "properties": all.clone(), "required": required}),
    );
    s.schemas.insert(
        "LimitValues".into(),
        json!({"type": "object", "properties": all, "additionalProperties": false,
            "description": "some limits by name (a missing one: unlimited in a new plan, unchanged in a patch or merge)"}),
    );
    let limits = json!({"$ref": "#/components/schemas/Limits"});
    let values = json!({"$ref": "#/components/schemas/LimitValues"});
    s.schemas.insert(
        "Plan".into(),
        json!({"type": "object", "required": ["id", "name", "builtin", "limits", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "builtin": {"type": "boolean"},
                "limits": limits, "created_at": {"type": "string"}, "updated_at": {"type": "string"},
            }}),
    );
    let plan = json!({"$ref": "#/components/schemas/Plan"});
    let mut used = Map::new();
    for l in Limit::ALL {
        if !matches!(
            l,
            Limit::UploadBytes | Limit::RequestsPerMinutePerKey | Limit::RequestsPerMinutePerOrg
        ) {
            used.insert(
                l.as_str().into(),
                json!({"type": ["integer", "null"], "minimum": 0}),
            );
        }
    }
    s.schemas.insert(
        "OrgLimits".into(),
        json!({"type": "object", "required": ["org_id", "plan", "overrides", "effective", "used"],
            "properties": {
                "org_id": {"type": "string", "format": "uuid"},
                "plan": {"type": "string"},
                "overrides": values.clone(),
                "effective": limits,
                "used": {"type": "object", "properties": used,
                    "description": "what the org uses (store-counted ones as last counted, null when not counted yet; monthly ones this calendar month)"},
            }}),
    );
    let org_limits = json!({"$ref": "#/components/schemas/OrgLimits"});
    s.schemas.insert(
        "Deleted".into(),
        json!({"type": "object", "required": ["kind", "id", "org_id", "name", "slug"],
        "properties": {
            "kind": {"type": "string", "enum": ["org", "workspace"]},
            "id": {"type": "string", "format": "uuid"},
            "org_id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"}, "slug": {"type": "string"},
            "deleted_at": {"type": ["string", "null"]},
            "purge_after": {"type": ["string", "null"]},
        }}),
    );
    let new_plan = json!({"type": "object", "required": ["id"], "additionalProperties": false,
        "properties": {"id": {"type": "string", "minLength": 1}, "name": {"type": "string"}, "limits": values.clone()}});
    let plan_patch = json!({"type": "object", "additionalProperties": false,
        "properties": {"name": {"type": "string"}, "limits": values.clone()}});
    s.op(
        "GET",
        "/v1/admin/plans",
        op("plans", "listPlans", "Every plan and its limits")
            .auth(Auth::Operator)
            .ok(
                200,
                "the plans",
                json!({"type": "object", "required": ["data"],
                "properties": {"data": {"type": "array", "items": plan.clone()}}}),
            ),
    );
    s.op(
        "POST",
        "/v1/admin/plans",
        op(
            "plans",
            "createPlan",
            "Create a custom plan (missing limits: unlimited)",
        )
        .auth(Auth::Operator)
        .json_body(new_plan)
        .ok(201, "created", plan.clone()),
    );
    s.op(
        "GET",
        "/v1/admin/plans/{plan}",
        op("plans", "getPlan", "A plan")
            .auth(Auth::Operator)
            .ok(200, "the plan", plan.clone()),
    );
    s.op(
        "PATCH",
        "/v1/admin/plans/{plan}",
        op(
            "plans",
            "patchPlan",
            "Change a plan's name or some of its limits",
        )
        .auth(Auth::Operator)
        .json_body(plan_patch)
        .ok(200, "changed", plan),
    );
    s.op(
        "DELETE",
        "/v1/admin/plans/{plan}",
        op("plans", "deletePlan", "Delete a custom plan no org uses")
            .auth(Auth::Operator)
            .empty(204, "deleted"),
    );
    s.op(
        "GET",
        "/v1/admin/orgs/{org}/limits",
        op(
            "plans",
            "getOrgLimitsAdmin",
            "An organization's limits and usage",
        )
        .auth(Auth::Operator)
        .ok(200, "the limits", org_limits.clone()),
    );
    s.op(
        "PUT",
        "/v1/admin/orgs/{org}/limits",
        op(
            "plans",
            "putOrgLimits",
            "Replace an organization's overrides ({} removes them)",
        )
        .auth(Auth::Operator)
        .json_body(values.clone())
        .ok(200, "the limits", org_limits.clone()),
    );
    s.op(
        "PATCH",
        "/v1/admin/orgs/{org}/limits",
        op(
            "plans",
            "patchOrgLimits",
            "Merge into an organization's overrides (null removes one)",
        )
        .auth(Auth::Operator)
        .json_body(json!({"type": "object", "additionalProperties": false, "properties": props}))
        .ok(200, "the limits", org_limits.clone()),
    );
    s.op(
        "GET",
        "/v1/orgs/{org}/limits",
        op(
            "plans",
            "getOrgLimits",
            "What the organization is held to, and uses",
        )
        .auth(Auth::User)
        .ok(200, "the limits", org_limits),
    );
    s.op(
        "GET",
        "/v1/admin/deleted",
        op("lifecycle", "listDeleted", "Deleted organizations and workspaces not purged yet")
            .auth(Auth::Operator)
            .ok(200, "what can be restored", json!({"type": "object", "required": ["data"],
                "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Deleted"}}}})),
    );
    s.op(
        "POST",
        "/v1/orgs/{org}/restore",
        op("lifecycle", "restoreOrg", "Restore a deleted organization (by id) and the workspaces deleted with it")
            .auth(Auth::Operator)
            .ok(200, "restored", json!({"type": "object", "required": ["org", "restored_workspaces"],
                "properties": {"org": {"$ref": "#/components/schemas/Org"},
                    "restored_workspaces": {"type": "array", "items": {"type": "string", "format": "uuid"}}}})),
    );
    s.op(
        "POST",
        "/v1/workspaces/{ws}/restore",
        op(
            "lifecycle",
            "restoreWorkspace",
            "Restore a deleted workspace of a live organization",
        )
        .auth(Auth::Operator)
        .ok(
            200,
            "restored",
            json!({"$ref": "#/components/schemas/WorkspaceRecord"}),
        ),
    );
}

fn with_secret(schema: Value, name: &str) -> Value {
    json!({"allOf": [schema, {
        "type": "object", "required": [name],
        "properties": {name: {"type": "string", "description": "shown once"}},
    }]})
}

// Schema-only types: the shapes of answers that handlers build with `json!`.

/// `GET /healthz`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Health {
    status: String,
}

/// `GET /readyz`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Readiness {
    /// `ready` or `unavailable`.
    status: String,
    /// `ok` or `failing`.
    control_plane: String,
    draining: bool,
}

/// `GET /v1/me`: the principal, with what it reaches.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Me {
    /// `operator`, `user`, `api_key` or `tenant_token`.
    principal: String,
    user: Option<crate::control::User>,
    orgs: Option<Vec<serde_json::Value>>,
    key_id: Option<String>,
    org_id: Option<uuid::Uuid>,
    workspace_id: Option<uuid::Uuid>,
    scopes: Option<crate::roles::Scopes>,
    filter: Option<serde_json::Value>,
    subject: Option<String>,
}

/// `POST /v1/invitations/{token}/accept`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Accepted {
    user: crate::control::User,
    org_id: uuid::Uuid,
    role: crate::roles::Role,
    /// A session for a new user.
    token: Option<String>,
    expires_at: Option<String>,
}

/// `POST /v1/admin/tenant-token-secret/rotate`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Rotated {
    current_kid: String,
    verifying_kids: Vec<String>,
}

/// `POST /documents?wait=true`: the indexed document with its job.
#[derive(ToSchema)]
#[allow(dead_code)]
struct DocumentCreated {
    #[schema(inline)]
    #[serde(flatten)]
    document: crate::knowledge::DocumentView,
    job_id: String,
    duplicate: bool,
}

/// An agent as an OpenAI model.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Model {
    /// The agent's slug.
    id: String,
    /// `model`.
    object: String,
    created: i64,
    owned_by: String,
    agent_id: String,
    name: String,
    description: String,
}

/// `GET /openai/v1/models`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ModelList {
    /// `list`.
    object: String,
    data: Vec<Model>,
}

/// `POST /openai/v1/chat/completions` without `stream`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ChatCompletion {
    id: String,
    /// `chat.completion`.
    object: String,
    created: i64,
    model: String,
    choices: Vec<serde_json::Value>,
    usage: crate::chat::Usage,
    citations: Vec<crate::chat::Citation>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_served_route_is_described_and_nothing_else() {
        let served: BTreeSet<(String, String)> = super::super::route_table()
            .into_iter()
            .map(|r| (r.method.to_string(), r.path))
            .collect();
        let described = operations(document());
        let missing: Vec<_> = served.difference(&described).collect();
        let extra: Vec<_> = described.difference(&served).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "served but not in /openapi.json: {missing:?}; in /openapi.json but not served: {extra:?}"
        );
        assert!(served.len() > 60, "the route table is suspiciously small");
    }

    #[test]
    fn references_resolve_and_operation_ids_are_unique() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\"$ref\":\"#/components/schemas/") {
            rest = &rest[i + 29..];
            let name: String = rest.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "unresolved $ref {name}");
        }
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for o in item.as_object().expect("item").values() {
                let id = o["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            }
        }
    }

    #[test]
    fn path_parameters_are_declared() {
        for (path, item) in document()["paths"].as_object().expect("paths") {
            for o in item.as_object().expect("item").values() {
                let declared: BTreeSet<&str> = o["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let wanted: BTreeSet<&str> = path_params(path).into_iter().collect();
                assert_eq!(declared, wanted, "{path}");
            }
        }
    }

    #[test]
    fn the_error_shape_names_every_code() {
        let codes = &document()["components"]["schemas"]["Error"]["properties"]["error"]
            ["properties"]["code"]["enum"];
        for c in [
            "invalid_request",
            "not_found",
            "insufficient_storage",
            "internal",
        ] {
            assert!(codes.as_array().expect("enum").contains(&json!(c)), "{c}");
        }
    }
}
