//! Property test of isolation: random orgs (some suspended), workspaces, users with random roles,
//! API keys with random scopes and tenant tokens with random filters. For every principal ×
//! endpoint × resource the answer is exactly what reachability and the permission table
//! (`enclave::identity::permits`) say, and no body names another tenant's org, workspace, key
//! or user. One server for the whole run; a bounded number of cases.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use enclave::identity::{permits, Action, Role, Scope, Scopes, Subject};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::harness::{Api, TestServer, PASSWORD};

static CASE: AtomicUsize = AtomicUsize::new(0);

const FILTERS: [Option<&str>; 4] = [
    None,
    Some(r#"{"group": "sales"}"#),
    Some(r#"{"group": {"in": ["a", "b"]}}"#),
    Some(r#"{"year": {"gte": 2020, "lte": 2024}, "lang": "en"}"#),
];

#[derive(Debug, Clone)]
struct Spec {
    /// Per org: number of workspaces (1..=2) and whether it ends up suspended.
    orgs: Vec<(usize, bool)>,
    /// Per user: per org, an optional role.
    users: Vec<Vec<Option<Role>>>,
    /// Per key: a workspace pick and a non-empty scope bitset.
    keys: Vec<(usize, u8)>,
    /// Per token: a key pick, a scope pick (subset of the key's search/chat) and a filter pick.
    tokens: Vec<(usize, u8, usize)>,
}

fn role() -> impl Strategy<Value = Option<Role>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Role::Viewer)),
        1 => Just(Some(Role::Member)),
        1 => Just(Some(Role::Admin)),
        1 => Just(Some(Role::Owner)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    prop::collection::vec((1usize..=2, prop::bool::weighted(0.25)), 2..=3).prop_flat_map(|orgs| {
        let n = orgs.len();
        (
            Just(orgs),
            prop::collection::vec(prop::collection::vec(role(), n), 2..=3),
            prop::collection::vec((0usize..64, 1u8..16), 2..=4),
            prop::collection::vec((0usize..64, 1u8..4, 0usize..FILTERS.len()), 0..=3),
        )
            .prop_map(|(orgs, users, keys, tokens)| Spec {
                orgs,
                users,
                keys,
                tokens,
            })
    })
}

fn scopes_of(bits: u8) -> Scopes {
    Scope::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, s)| s)
        .collect()
}

struct Org {
    id: String,
    suspended: bool,
    ws: Vec<String>,
}

struct User {
    email: String,
    token: String,
    roles: Vec<Option<Role>>,
}

struct Key {
    org: usize,
    ws: String,
    prefix: String,
    key: String,
    scopes: Scopes,
}

struct Token {
    org: usize,
    ws: String,
    token: String,
    scopes: Scopes,
    filter: Option<Value>,
}

struct World {
    orgs: Vec<Org>,
    users: Vec<User>,
    keys: Vec<Key>,
    tokens: Vec<Token>,
}

/// What a request checks: name, method, path, body, and the expected (status, code).
type Call = (
    String,
    reqwest::Method,
    String,
    Option<Value>,
    (u16, &'static str),
);

#[derive(Debug, Clone, Copy)]
enum P {
    Anonymous,
    Operator,
    User(usize),
    Key(usize),
    Token(usize),
}

async fn build(s: &TestServer, api: &Api, spec: &Spec) -> World {
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let mut orgs = Vec::new();
    for (i, (n_ws, suspended)) in spec.orgs.iter().enumerate() {
        let id = api.create_org(&format!("c{case}-o{i}")).await;
        let mut ws = Vec::new();
        for w in 0..*n_ws {
            ws.push(api.create_workspace(&id, &format!("w{w}")).await);
        }
        orgs.push(Org {
            id,
            suspended: *suspended,
            ws,
        });
    }
    let mut users = Vec::new();
    for (u, roles) in spec.users.iter().enumerate() {
        let email = format!("u{u}-c{case}@example.com");
        let user = s
            .app
            .identity()
            .create_user(&email, "", PASSWORD, None)
            .expect("create user");
        for (o, r) in roles.iter().enumerate() {
            if let Some(r) = r {
                let org = uuid::Uuid::parse_str(&orgs[o].id).expect("org id");
                s.app
                    .control_plane()
                    .add_member(org, user.id, *r)
                    .expect("member");
            }
        }
        let r = api.login(&email, PASSWORD).await;
        assert_eq!(r.status, 200, "login {:?}", r.body);
        users.push(User {
            email,
            token: r.body["token"].as_str().expect("token").to_string(),
            roles: roles.clone(),
        });
    }
    let all_ws: Vec<(usize, String)> = orgs
        .iter()
        .enumerate()
        .flat_map(|(o, org)| org.ws.iter().map(move |w| (o, w.clone())))
        .collect();
    let mut keys = Vec::new();
    for (pick, bits) in &spec.keys {
        let (org, ws) = all_ws[pick % all_ws.len()].clone();
        let scopes = scopes_of(*bits);
        let names: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
        let k = api.create_key(&ws, &names).await;
        keys.push(Key {
            org,
            ws,
            prefix: k.prefix,
            key: k.key,
            scopes,
        });
    }
    let mut tokens = Vec::new();
    for (pick, sub, f) in &spec.tokens {
        let key = &keys[pick % keys.len()];
        let wanted = scopes_of(*sub).intersect(key.scopes);
        if wanted.is_empty() {
            continue;
        }
        let filter: Option<Value> = FILTERS[*f].map(|t| serde_json::from_str(t).expect("filter"));
        let names: Vec<&str> = wanted.iter().map(Scope::as_str).collect();
        let r = api
            .with_token(&key.key)
            .mint_token(json!({"scopes": names, "filter": filter}))
            .await;
        assert_eq!(r.status, 201, "mint {:?}", r.body);
        tokens.push(Token {
            org: key.org,
            ws: key.ws.clone(),
            token: r.body["token"].as_str().expect("token").to_string(),
            scopes: wanted,
            filter,
        });
    }
    for org in &orgs {
        if org.suspended {
            let r = api
                .post(&format!("/v1/orgs/{}/suspend", org.id), json!({}))
                .await;
            assert_eq!(r.status, 200);
        }
    }
    World {
        orgs,
        users,
        keys,
        tokens,
    }
}

impl World {
    fn principals(&self) -> Vec<P> {
        let mut v = vec![P::Anonymous, P::Operator];
        v.extend((0..self.users.len()).map(P::User));
        v.extend((0..self.keys.len()).map(P::Key));
        v.extend((0..self.tokens.len()).map(P::Token));
        v
    }

    fn client(&self, api: &Api, p: P) -> Api {
        match p {
            P::Anonymous => api.without_token(),
            P::Operator => api.clone(),
            P::User(u) => api.with_token(&self.users[u].token),
            P::Key(k) => api.with_token(&self.keys[k].key),
            P::Token(t) => api.with_token(&self.tokens[t].token),
        }
    }

    fn org_of_ws(&self, ws: &str) -> usize {
        self.orgs
            .iter()
            .position(|o| o.ws.iter().any(|w| w == ws))
            .expect("ws in world")
    }

    /// `Err(answer)` when the principal cannot reach org `o` / workspace `ws` at all (404), is
    /// refused (401, suspended); `Ok(subject)` for the permission table otherwise.
    fn reach(&self, p: P, o: usize, ws: Option<&str>) -> Result<Subject, (u16, &'static str)> {
        let not_found = (404, "not_found");
        let subject = match p {
            P::Anonymous => return Err((401, "unauthenticated")),
            P::Operator => return Ok(Subject::Operator),
            P::User(u) => Subject::Member(self.users[u].roles[o].ok_or(not_found)?),
            P::Key(k) => {
                let key = &self.keys[k];
                let ok = match ws {
                    Some(w) => key.ws == w,
                    None => key.org == o,
                };
                if !ok {
                    return Err(not_found);
                }
                Subject::Key(key.scopes)
            }
            P::Token(t) => {
                let tok = &self.tokens[t];
                let ok = match ws {
                    Some(w) => tok.ws == w,
                    None => tok.org == o,
                };
                if !ok {
                    return Err(not_found);
                }
                Subject::Token(tok.scopes)
            }
        };
        if self.orgs[o].suspended {
            return Err((403, "tenant_suspended"));
        }
        Ok(subject)
    }

    /// Ids that `p` must never see in a body.
    fn foreign_ids(&self, p: P) -> Vec<String> {
        let mut out = Vec::new();
        let (orgs_visible, ws_visible): (HashSet<usize>, Option<String>) = match p {
            P::Anonymous | P::Operator => return out,
            P::User(u) => (
                (0..self.orgs.len())
                    .filter(|o| self.users[u].roles[*o].is_some())
                    .collect(),
                None,
            ),
            P::Key(k) => ([self.keys[k].org].into(), Some(self.keys[k].ws.clone())),
            P::Token(t) => ([self.tokens[t].org].into(), Some(self.tokens[t].ws.clone())),
        };
        for (o, org) in self.orgs.iter().enumerate() {
            let visible = orgs_visible.contains(&o);
            if !visible {
                out.push(org.id.clone());
            }
            for w in &org.ws {
                let ws_ok = visible && ws_visible.as_ref().is_none_or(|v| v == w);
                if !ws_ok {
                    out.push(w.clone());
                }
            }
        }
        for k in &self.keys {
            if !orgs_visible.contains(&k.org) || ws_visible.is_some() {
                out.push(k.prefix.clone());
            }
        }
        for (u, user) in self.users.iter().enumerate() {
            let shares = match p {
                P::User(me) => {
                    u == me
                        || (0..self.orgs.len())
                            .any(|o| user.roles[o].is_some() && self.users[me].roles[o].is_some())
                }
                _ => false,
            };
            if !shares {
                out.push(user.email.clone());
            }
        }
        out
    }
}

/// What the answer must be: (status, code) with code "" for a success.
fn expected(
    w: &World,
    p: P,
    action: Action,
    o: usize,
    ws: Option<&str>,
    ok: u16,
    extra: Option<Scope>,
) -> (u16, &'static str) {
    match w.reach(p, o, ws) {
        Err(e) => e,
        Ok(subject) => {
            let mut allowed = permits(subject, action);
            if action == Action::TenantTokenMint {
                // The table lets a key mint; the domain lets it delegate only scopes it holds,
                // and only keys mint (a token needs a parent key to be revocable).
                allowed &= match subject {
                    Subject::Key(s) => extra.is_some_and(|x| s.contains(x)),
                    _ => false,
                };
            }
            if allowed {
                (ok, "")
            } else {
                (403, "forbidden")
            }
        }
    }
}

async fn check_case(s: &TestServer, spec: Spec) -> Result<(), TestCaseError> {
    let api = s.api();
    let w = build(s, &api, &spec).await;
    let mut failures = Vec::new();
    for p in w.principals() {
        let c = w.client(&api, p);
        let foreign = w.foreign_ids(p);
        let mut calls: Vec<Call> = Vec::new();
        for (o, org) in w.orgs.iter().enumerate() {
            for (path, action) in [
                (format!("/v1/orgs/{}", org.id), Action::OrgRead),
                (format!("/v1/orgs/{}/members", org.id), Action::MembersRead),
                (
                    format!("/v1/orgs/{}/workspaces", org.id),
                    Action::WorkspaceList,
                ),
            ] {
                let exp = expected(&w, p, action, o, None, 200, None);
                calls.push((format!("{action:?}"), reqwest::Method::GET, path, None, exp));
            }
            for ws in &org.ws {
                let o = w.org_of_ws(ws);
                let wsr = Some(ws.as_str());
                calls.push((
                    "WorkspaceRead".into(),
                    reqwest::Method::GET,
                    format!("/v1/workspaces/{ws}"),
                    None,
                    expected(&w, p, Action::WorkspaceRead, o, wsr, 200, None),
                ));
                calls.push((
                    "WorkspaceUpdate".into(),
                    reqwest::Method::PATCH,
                    format!("/v1/workspaces/{ws}"),
                    Some(json!({"settings": {"touched": true}})),
                    expected(&w, p, Action::WorkspaceUpdate, o, wsr, 200, None),
                ));
                calls.push((
                    "ApiKeysManage".into(),
                    reqwest::Method::GET,
                    format!("/v1/workspaces/{ws}/api-keys"),
                    None,
                    expected(&w, p, Action::ApiKeysManage, o, wsr, 200, None),
                ));
                for scope in [Scope::Search, Scope::Chat] {
                    calls.push((
                        format!("TenantTokenMint({scope:?})"),
                        reqwest::Method::POST,
                        format!("/v1/workspaces/{ws}/tenant-tokens"),
                        Some(json!({"scopes": [scope.as_str()]})),
                        expected(&w, p, Action::TenantTokenMint, o, wsr, 201, Some(scope)),
                    ));
                }
            }
        }
        for (what, method, path, body, (status, code)) in calls {
            let r = c.send(method, &path, body).await;
            if r.status != status || (!code.is_empty() && r.code() != code) {
                failures.push(format!(
                    "{p:?} {what} {path}: got {} {}, want {status} {code}",
                    r.status,
                    r.code()
                ));
            }
            let text = r.body.to_string();
            for id in &foreign {
                if text.contains(id.as_str()) {
                    failures.push(format!("{p:?} {what} {path}: body leaks {id}"));
                }
            }
        }
        // /v1/me and /v1/orgs.
        let me = c.get("/v1/me").await;
        let want_me = if matches!(p, P::Anonymous) { 401 } else { 200 };
        if me.status != want_me {
            failures.push(format!("{p:?} /v1/me: got {}", me.status));
        }
        if let P::Token(t) = p {
            let tok = &w.tokens[t];
            if me.body["filter"] != tok.filter.clone().unwrap_or(Value::Null)
                || me.body["scopes"] != serde_json::to_value(tok.scopes).unwrap_or_default()
            {
                failures.push(format!(
                    "{p:?} /v1/me: wrong filter or scopes {:?}",
                    me.body
                ));
            }
        }
        let list = c.get("/v1/orgs").await;
        match p {
            P::Anonymous => {
                if list.status != 401 {
                    failures.push(format!("{p:?} /v1/orgs: got {}", list.status));
                }
            }
            P::Key(_) | P::Token(_) => {
                if list.status != 403 {
                    failures.push(format!("{p:?} /v1/orgs: got {}", list.status));
                }
            }
            P::Operator => {}
            P::User(u) => {
                let got: HashSet<String> = list.body["data"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| o["id"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let want: HashSet<String> = (0..w.orgs.len())
                    .filter(|o| w.users[u].roles[*o].is_some())
                    .map(|o| w.orgs[o].id.clone())
                    .collect();
                if got != want {
                    failures.push(format!("{p:?} /v1/orgs: got {got:?}, want {want:?}"));
                }
            }
        }
        for id in &foreign {
            if me.body.to_string().contains(id.as_str())
                || list.body.to_string().contains(id.as_str())
            {
                failures.push(format!("{p:?} /v1/me or /v1/orgs leaks {id}"));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "{spec:?}\n{}",
            failures.join("\n")
        )))
    }
}

#[test]
fn every_principal_gets_exactly_what_the_permission_table_allows() {
    let s = TestServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: 20,
        max_shrink_iters: 8,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&spec(), |spec| rt.block_on(check_case(&s, spec)));
    if let Err(e) = result {
        panic!("{e}");
    }
}
