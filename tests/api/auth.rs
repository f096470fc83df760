//! Identity and isolation, attacked by name: sessions, keys, tenant tokens, tenant hints, roles.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::harness::{run_scenarios, Api, Options, Scenario, TestServer, PASSWORD};

/// Two orgs with one workspace each.
async fn two_tenants(api: &Api) -> (String, String, String, String) {
    let org_a = api.create_org("alpha").await;
    let ws_a = api.create_workspace(&org_a, "docs").await;
    let org_b = api.create_org("beta").await;
    let ws_b = api.create_workspace(&org_b, "docs").await;
    (org_a, ws_a, org_b, ws_b)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

fn parts(token: &str) -> (Value, Value) {
    let p: Vec<&str> = token.split('.').collect();
    let dec = |s: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("b64")).expect("json")
    };
    (dec(p[0]), dec(p[1]))
}

fn sign_hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("key");
    m.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

fn sign_hs512(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut m = <Hmac<sha2::Sha512> as Mac>::new_from_slice(secret).expect("key");
    m.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

#[tokio::test]
async fn login_me_logout_and_session_reuse() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("acme").await;
    let ann = api.create_user(&org, "Ann@Example.com", "admin").await;
    assert_eq!(ann.email, "Ann@Example.com");

    let r = api.login("ann@example.com", PASSWORD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = r.body["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("enc_sess_"));
    let me = api.with_token(&token).get("/v1/me").await;
    assert_eq!(me.body["principal"], "user");
    assert_eq!(me.body["user"]["email"], "ann@example.com");
    assert_eq!(me.body["orgs"][0]["role"], "admin");
    assert!(me.body["user"].get("password_hash").is_none());

    // Her own orgs only.
    api.create_org("other").await;
    let r = api.with_token(&token).get("/v1/orgs").await;
    assert_eq!(
        r.body["data"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["data"][0]["role"], "admin");

    let r = api
        .with_token(&token)
        .post("/v1/auth/logout", json!({}))
        .await;
    assert_eq!(r.status, 204);
    let r = api.with_token(&token).get("/v1/me").await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthenticated"),
        "session reuse after logout"
    );
    // The other session (from accepting the invitation) is unaffected.
    assert_eq!(api.with_token(&ann.token).get("/v1/me").await.status, 200);

    // Wrong password, unknown user: the same answer.
    let r = api.login("ann@example.com", "wrong password!").await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    let r = api.login("nobody@example.com", PASSWORD).await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    // Forged session tokens of the right shape.
    let forged = format!("enc_sess_{}", "0".repeat(64));
    assert_eq!(api.with_token(&forged).get("/v1/me").await.status, 401);
}

#[tokio::test]
async fn login_is_throttled_per_email() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("acme").await;
    api.create_user(&org, "bob@example.com", "member").await;
    for _ in 0..5 {
        let r = api.login("bob@example.com", "not the password").await;
        assert_eq!(r.status, 401);
    }
    // Locked out, even with the right password.
    let r = api.login("bob@example.com", PASSWORD).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{:?}", r.body);
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .expect("hdr")
        .parse()
        .expect("secs");
    assert!(retry > 0);
}

#[tokio::test]
async fn api_keys_lifecycle_and_attacks() {
    let s = TestServer::start();
    let api = s.api();
    let (org_a, ws_a, org_b, ws_b) = two_tenants(&api).await;
    let k = api.create_key(&ws_a, &["manage", "search"]).await;
    assert!(k.key.starts_with(&k.prefix));
    let key = api.with_token(&k.key);

    // The key reaches its own workspace.
    let r = key.get(&format!("/v1/workspaces/{ws_a}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = key.get("/v1/me").await;
    assert_eq!(r.body["workspace_id"].as_str(), Some(ws_a.as_str()));
    assert_eq!(r.body["scopes"], json!(["search", "manage"]));

    // Path/credential mismatch: another tenant's workspace and org are 404, its own org 403.
    // Keys never manage keys or delete workspaces. X-Tenant-ID of another tenant.
    let other_tenant = key.with_header("X-Tenant-ID", &ws_b);
    run_scenarios(&[
        Scenario::get(
            "another tenant's workspace",
            &key,
            format!("/v1/workspaces/{ws_b}"),
        )
        .fails(404, "not_found")
        .body_lacks(&ws_b),
        Scenario::get("another tenant's org", &key, format!("/v1/orgs/{org_b}"))
            .fails(404, "not_found"),
        Scenario::get("its own org", &key, format!("/v1/orgs/{org_a}")).fails(403, "forbidden"),
        Scenario::get("the org list", &key, "/v1/orgs").fails(403, "forbidden"),
        Scenario::get("its keys", &key, format!("/v1/workspaces/{ws_a}/api-keys"))
            .fails(403, "forbidden"),
        Scenario::delete("its workspace", &key, format!("/v1/workspaces/{ws_a}"))
            .fails(403, "forbidden"),
        Scenario::get(
            "header of another tenant",
            &other_tenant,
            format!("/v1/workspaces/{ws_a}"),
        )
        .fails(404, "not_found"),
        Scenario::get("header of another tenant, /me", &other_tenant, "/v1/me")
            .fails(404, "not_found"),
        Scenario::get(
            "a path as header",
            &key.with_header("X-Tenant-ID", "../etc"),
            "/v1/me",
        )
        .fails(400, "invalid_request"),
        Scenario::get(
            "agreeing header",
            &key.with_header("X-Tenant-ID", &ws_a),
            format!("/v1/workspaces/{ws_a}"),
        ),
    ])
    .await;

    // The prefix with a wrong secret; a truncated key; the prefix alone.
    let wrong = format!("{}_{}", k.prefix, "f".repeat(64));
    for bad in [wrong.as_str(), &k.key[..k.key.len() - 1], k.prefix.as_str()] {
        let r = api.with_token(bad).get("/v1/me").await;
        assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{bad}");
    }

    // Listing never shows secrets; last use is tracked in memory.
    let r = api.get(&format!("/v1/workspaces/{ws_a}/api-keys")).await;
    assert_eq!(r.status, 200);
    let text = r.body.to_string();
    assert!(
        !text.contains(&k.key[k.prefix.len() + 1..]),
        "secret listed"
    );
    assert!(
        r.body["data"][0]["last_used_at"].is_string(),
        "{:?}",
        r.body
    );
    let raw = std::fs::read(s.data_path("control.db")).expect("db");
    assert!(
        !raw.windows(k.key.len()).any(|w| w == k.key.as_bytes()),
        "key stored in clear"
    );

    // Revocation takes effect at once; revoking twice is 404; another tenant cannot revoke.
    let other = api.create_key(&ws_b, &["search"]).await;
    let r = api
        .delete(&format!("/v1/workspaces/{ws_a}/api-keys/{}", other.id))
        .await;
    assert_eq!(r.status, 404, "a key of another workspace");
    assert_eq!(api.with_token(&other.key).get("/v1/me").await.status, 200);
    let r = api
        .delete(&format!("/v1/workspaces/{ws_a}/api-keys/{}", k.id))
        .await;
    assert_eq!(r.status, 204);
    let r = key.get(&format!("/v1/workspaces/{ws_a}")).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthenticated"),
        "revoked key"
    );
    let r = api
        .delete(&format!("/v1/workspaces/{ws_a}/api-keys/{}", k.id))
        .await;
    assert_eq!(r.status, 404);

    // Expired key: the server's clock passes its expiry.
    let exp = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let r = api
        .post(
            &format!("/v1/workspaces/{ws_a}/api-keys"),
            json!({"name": "short", "scopes": ["search"], "expires_at": exp}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let short = r.body["key"].as_str().expect("key").to_string();
    assert_eq!(api.with_token(&short).get("/v1/me").await.status, 200);
    s.advance_clock(std::time::Duration::from_secs(61));
    let r = api.with_token(&short).get("/v1/me").await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthenticated"),
        "expired key"
    );

    // Bad key requests.
    for body in [
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": ["search"], "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "x", "scopes": ["search"], "expires_at": "tomorrow"}),
    ] {
        let r = api
            .post(&format!("/v1/workspaces/{ws_a}/api-keys"), body)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{:?}",
            r.body
        );
    }

    // A key of a deleted workspace stops working.
    let doomed = api.create_key(&ws_b, &["search"]).await;
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{ws_b}")).await.status,
        204
    );
    let r = api.with_token(&doomed.key).get("/v1/me").await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthenticated"),
        "deleted workspace"
    );
}

#[tokio::test]
async fn subdomain_must_agree_with_the_credential() {
    let s = TestServer::start_with(Options::configured(|c| {
        c.tenant_domain = Some("kb.test".into())
    }));
    let api = s.api();
    let (_, ws_a, _, ws_b) = two_tenants(&api).await;
    let k = api.create_key(&ws_a, &["manage"]).await;
    let key = api.with_token(&k.key);
    let r = key
        .with_header("Host", &format!("{ws_b}.kb.test"))
        .get(&format!("/v1/workspaces/{ws_a}"))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = key
        .with_header("Host", &format!("{ws_a}.kb.test:7700"))
        .get(&format!("/v1/workspaces/{ws_a}"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Subdomain and header disagree.
    let r = key
        .with_header("Host", &format!("{ws_a}.kb.test"))
        .with_header("X-Tenant-ID", &ws_b)
        .get("/v1/me")
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn tenant_tokens_narrow_and_cannot_be_forged() {
    let s = TestServer::start();
    let api = s.api();
    let (_, ws_a, _, ws_b) = two_tenants(&api).await;
    let k = api.create_key(&ws_a, &["search", "chat", "ingest"]).await;
    let key = api.with_token(&k.key);
    let filter = json!({"group": "sales", "year": {"gte": 2020}});

    let token = key
        .tenant_token(
            json!({"scopes": ["search"], "filter": filter, "subject": "u-7", "expires_in": 600}),
        )
        .await;
    let me = api.with_token(&token).get("/v1/me").await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["principal"], "tenant_token");
    assert_eq!(me.body["scopes"], json!(["search"]));
    assert_eq!(me.body["filter"], filter);
    assert_eq!(me.body["workspace_id"].as_str(), Some(ws_a.as_str()));

    // Minting never widens: no scope beyond the key, no ingest/manage, no bad filters.
    let r = key.mint_token(json!({"scopes": ["manage"]})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let search_only = api.create_key(&ws_a, &["search"]).await;
    let r = api
        .with_token(&search_only.key)
        .mint_token(json!({"scopes": ["chat"]}))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = key
        .mint_token(json!({"filter": {"group": {"regex": ".*"}}}))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = key.mint_token(json!({"expires_in": 10_000_000})).await;
    assert_eq!(r.status, 400);
    // A token cannot mint another token (which could drop the filter), nor use control routes.
    let r = api.with_token(&token).mint_token(json!({})).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = api
        .with_token(&token)
        .get(&format!("/v1/workspaces/{ws_a}"))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = api
        .with_token(&token)
        .get(&format!("/v1/workspaces/{ws_b}"))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // Users and the operator do not mint (a token needs a parent key to be revocable).
    let r = api
        .post(&format!("/v1/workspaces/{ws_a}/tenant-tokens"), json!({}))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // A route without {ws} needs a key's workspace.
    let r = api.post("/v1/tenant-tokens", json!({})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));

    // Tampering.
    let (header, claims) = parts(&token);
    let kid = header["kid"].as_str().expect("kid").to_string();
    let secret = s
        .app
        .identity()
        .state()
        .signing_secret(&kid)
        .expect("secret");
    let mut widened = claims.clone();
    widened.as_object_mut().expect("obj").remove("filter");
    let p: Vec<&str> = token.split('.').collect();
    let edited = format!("{}.{}.{}", p[0], b64(&widened), p[2]);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": kid})),
        b64(&widened)
    );
    let hs512 = sign_hs512(&json!({"alg": "HS512", "kid": kid}), &widened, &secret);
    let wrong_key = sign_hs256(
        &json!({"alg": "HS256", "kid": kid}),
        &widened,
        b"guessed secret",
    );
    let unknown_kid = sign_hs256(&json!({"alg": "HS256", "kid": "nope"}), &widened, &secret);
    for (name, t) in [
        ("edited payload", edited),
        ("alg none", none),
        ("HS512", hs512),
        ("wrong key", wrong_key),
        ("unknown kid", unknown_kid),
    ] {
        let r = api.with_token(&t).get("/v1/me").await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "{name}: {:?}",
            r.body
        );
    }
    // Even correctly signed (a leaked secret): another workspace than the key's, or more
    // scopes than the key holds, gain nothing.
    let mut moved = claims.clone();
    moved["ws"] = json!(ws_b);
    let t = sign_hs256(&header, &moved, &secret);
    assert_eq!(api.with_token(&t).get("/v1/me").await.status, 401);
    let mut more = claims.clone();
    more["scopes"] = json!(["search", "chat", "ingest", "manage"]);
    let t = sign_hs256(&header, &more, &secret);
    let r = api.with_token(&t).get("/v1/me").await;
    assert_eq!(
        r.body["scopes"],
        json!(["search", "chat"]),
        "capped by key and token maximum"
    );

    // Expired token.
    let short = key.tenant_token(json!({"expires_in": 1})).await;
    s.advance_clock(std::time::Duration::from_secs(2));
    let r = api.with_token(&short).get("/v1/me").await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthenticated"),
        "expired token"
    );

    // Rotation: the previous secret keeps verifying unless retired.
    let r = api
        .post("/v1/admin/tenant-token-secret/rotate", json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(api.with_token(&token).get("/v1/me").await.status, 200);
    let fresh = key.tenant_token(json!({})).await;
    assert_ne!(parts(&fresh).0["kid"], header["kid"]);
    let r = api
        .post(
            "/v1/admin/tenant-token-secret/rotate?retire_previous=true",
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(api.with_token(&token).get("/v1/me").await.status, 401);
    assert_eq!(api.with_token(&fresh).get("/v1/me").await.status, 401);
    let newest = key.tenant_token(json!({})).await;
    assert_eq!(api.with_token(&newest).get("/v1/me").await.status, 200);

    // Revoking the key revokes its tokens at once.
    api.delete(&format!("/v1/workspaces/{ws_a}/api-keys/{}", k.id))
        .await;
    let r = api.with_token(&newest).get("/v1/me").await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthenticated"),
        "token of a revoked key"
    );
}

#[tokio::test]
async fn roles_owners_and_escalation() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("acme").await;
    let owner = api.create_user(&org, "owner@x.io", "owner").await;
    let o = api.with_token(&owner.token);
    let admin = o.create_user(&org, "admin@x.io", "admin").await;
    let a = api.with_token(&admin.token);
    let member = a.create_user(&org, "member@x.io", "member").await;
    let viewer = a.create_user(&org, "viewer@x.io", "viewer").await;
    let v = api.with_token(&viewer.token);

    let r = v.get(&format!("/v1/orgs/{org}/members")).await;
    assert_eq!(
        r.body["data"].as_array().map(Vec::len),
        Some(4),
        "{:?}",
        r.body
    );

    // Admin escalating to owner, inviting an owner, touching the owner.
    let r = a
        .patch(
            &format!("/v1/orgs/{org}/members/{}", admin.id),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "admin self-escalation"
    );
    let r = a
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            json!({"email": "x@x.io", "role": "owner"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = a
        .patch(
            &format!("/v1/orgs/{org}/members/{}", owner.id),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "admin demoting the owner"
    );
    let r = a
        .delete(&format!("/v1/orgs/{org}/members/{}", owner.id))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "admin removing the owner"
    );
    // Member and viewer manage nobody.
    let r = api
        .with_token(&member.token)
        .patch(
            &format!("/v1/orgs/{org}/members/{}", viewer.id),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // Admin manages members.
    let r = a
        .patch(
            &format!("/v1/orgs/{org}/members/{}", viewer.id),
            json!({"role": "member"}),
        )
        .await;
    assert_eq!((r.status, r.body["role"].as_str()), (200, Some("member")));

    // The last owner can be neither demoted, removed, nor leave.
    let r = o
        .patch(
            &format!("/v1/orgs/{org}/members/{}", owner.id),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict"),
        "demoting the last owner"
    );
    let r = o
        .delete(&format!("/v1/orgs/{org}/members/{}", owner.id))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict"),
        "removing the last owner"
    );
    let r = api
        .delete(&format!("/v1/orgs/{org}/members/{}", owner.id))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict"),
        "not even the operator"
    );
    // With a second owner, the first may step down.
    let r = o
        .patch(
            &format!("/v1/orgs/{org}/members/{}", admin.id),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = o
        .patch(
            &format!("/v1/orgs/{org}/members/{}", owner.id),
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Roles on org and workspace routes.
    let r = api
        .with_token(&member.token)
        .post(&format!("/v1/orgs/{org}/workspaces"), json!({"name": "w"}))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = a
        .post(&format!("/v1/orgs/{org}/workspaces"), json!({"name": "w"}))
        .await;
    assert_eq!(r.status, 201, "org admin creates workspaces");
    let ws = r.id();
    let r = v.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(r.status, 200);
    let r = v
        .patch(&format!("/v1/workspaces/{ws}"), json!({"name": "z"}))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = v.post(&format!("/v1/orgs/{org}/suspend"), json!({})).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = o.delete(&format!("/v1/orgs/{org}")).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "only owners delete orgs (o stepped down)"
    );
    let r = a.post("/v1/orgs", json!({"name": "mine"})).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Another org is invisible.
    let other = api.create_org("globex").await;
    let other_ws = api.create_workspace(&other, "secret").await;
    let r = a.get(&format!("/v1/orgs/{other}")).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = a.get(&format!("/v1/workspaces/{other_ws}")).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = a
        .with_header("X-Tenant-ID", &other_ws)
        .get(&format!("/v1/workspaces/{ws}"))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = a
        .with_header("X-Tenant-ID", &other_ws)
        .get(&format!("/v1/orgs/{org}"))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // Suspension: members and keys get 403 tenant_suspended; the operator still reaches it.
    let key = a.create_key(&ws, &["manage"]).await;
    assert_eq!(
        api.post(&format!("/v1/orgs/{org}/suspend"), json!({}))
            .await
            .status,
        200
    );
    for who in [&a, &api.with_token(&key.key)] {
        let r = who.get(&format!("/v1/workspaces/{ws}")).await;
        assert_eq!((r.status, r.code()), (403, "tenant_suspended"));
    }
    let r = a.get(&format!("/v1/orgs/{org}")).await;
    assert_eq!((r.status, r.code()), (403, "tenant_suspended"));
    assert_eq!(api.get(&format!("/v1/workspaces/{ws}")).await.status, 200);
    api.post(&format!("/v1/orgs/{org}/reactivate"), json!({}))
        .await;
    assert_eq!(a.get(&format!("/v1/workspaces/{ws}")).await.status, 200);
}

#[tokio::test]
async fn invitations_are_single_use_and_bound_to_their_user() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("acme").await;
    let org2 = api.create_org("globex").await;
    let ann = api.create_user(&org, "ann@x.io", "member").await;

    let r = api
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            json!({"email": "new@x.io", "role": "viewer"}),
        )
        .await;
    let inv = r.body["token"].as_str().expect("token").to_string();
    let r = api
        .without_token()
        .post(&format!("/v1/invitations/{inv}/accept"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "a new user needs a password"
    );
    let r = api
        .without_token()
        .post(
            &format!("/v1/invitations/{inv}/accept"),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = api
        .without_token()
        .post(
            &format!("/v1/invitations/{inv}/accept"),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "single use");
    let r = api
        .without_token()
        .post(
            "/v1/invitations/enc_inv_nope/accept",
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 404);

    // An existing user accepts only with their own session.
    let r = api
        .post(
            &format!("/v1/orgs/{org2}/invitations"),
            json!({"email": "ann@x.io", "role": "admin"}),
        )
        .await;
    let inv = r.body["token"].as_str().expect("token").to_string();
    let r = api
        .without_token()
        .post(
            &format!("/v1/invitations/{inv}/accept"),
            json!({"password": "attacker's choice"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    let someone = api.create_user(&org, "eve@x.io", "member").await;
    let r = api
        .with_token(&someone.token)
        .post(&format!("/v1/invitations/{inv}/accept"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthenticated"),
        "another user's session"
    );
    let r = api
        .with_token(&ann.token)
        .post(&format!("/v1/invitations/{inv}/accept"), json!({}))
        .await;
    assert_eq!((r.status, r.body["role"].as_str()), (200, Some("admin")));
    let me = api.with_token(&ann.token).get("/v1/me").await;
    assert_eq!(me.body["orgs"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn operator_actions_are_audited() {
    let s = TestServer::start();
    let api = s.api();
    let (org_a, ws_a, _, _) = two_tenants(&api).await;
    let user = api.create_user(&org_a, "u@x.io", "owner").await;
    api.post(&format!("/v1/orgs/{org_a}/suspend"), json!({}))
        .await;
    api.get(&format!("/v1/workspaces/{ws_a}")).await;
    let r = api.get(&format!("/v1/admin/audit?org={org_a}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let entries = r.body["data"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"org.suspend"), "{actions:?}");
    assert!(actions.contains(&"GET /v1/workspaces/{ws}"), "{actions:?}");
    let get = entries
        .iter()
        .find(|e| e["action"] == "GET /v1/workspaces/{ws}")
        .expect("entry");
    assert_eq!(get["workspace_id"].as_str(), Some(ws_a.as_str()));
    assert_eq!(get["actor"], "operator");
    assert!(get["request_id"].is_string() && get["at"].is_string());
    // Users cannot read the log.
    let r = api.with_token(&user.token).get("/v1/admin/audit").await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
}

/// Every credential expires by the server's clock: a session and an invitation after their
/// seven days, an API key at its `expires_at`, a tenant token at its `exp`; and what is issued
/// after the clock moved is dated by it (a fresh session, key and token work at once).
#[tokio::test]
async fn every_credential_expires_by_the_servers_clock() {
    let s = TestServer::start();
    let api = s.api();
    let (org, ws, _, _) = two_tenants(&api).await;
    let user = api.create_user(&org, "ann@x.io", "admin").await;
    let session = api.with_token(&user.token);
    assert_eq!(session.get("/v1/me").await.status, 200);
    let r = api
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            json!({"email": "late@x.io", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let invitation = r.body["token"].as_str().expect("token").to_string();
    let exp = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            json!({"name": "two days", "scopes": ["search"], "expires_at": exp}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = api.with_token(r.body["key"].as_str().expect("key"));
    let token = key.tenant_token(json!({})).await;
    assert_eq!(api.with_token(&token).get("/v1/me").await.status, 200);

    // An hour and a second: the token (one hour by default) has expired, the rest has not.
    s.advance_clock(std::time::Duration::from_secs(3601));
    let r = api.with_token(&token).get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "token");
    assert_eq!(key.get("/v1/me").await.status, 200, "key");
    assert_eq!(session.get("/v1/me").await.status, 200, "session");
    let fresh = key.tenant_token(json!({})).await;
    assert_eq!(api.with_token(&fresh).get("/v1/me").await.status, 200);

    // Two days: the key has expired; an expiry before the (moved) clock is refused.
    s.advance_clock(std::time::Duration::from_secs(2 * 86_400));
    let r = key.get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "key");
    assert_eq!(session.get("/v1/me").await.status, 200, "session");
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            json!({"name": "past", "scopes": ["search"], "expires_at": exp}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "{:?}",
        r.body
    );

    // Seven days: the session and the invitation have expired; a new login works.
    s.advance_clock(std::time::Duration::from_secs(5 * 86_400));
    let r = session.get("/v1/me").await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "session");
    let r = api
        .without_token()
        .post(
            &format!("/v1/invitations/{invitation}/accept"),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "invitation");
    let r = api.login("ann@x.io", PASSWORD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let again = api.with_token(r.body["token"].as_str().expect("session"));
    assert_eq!(again.get("/v1/me").await.status, 200);
}
