//! Hardening (issue 10): access. Ids and slugs never collide (class 6), tenant tokens own their
//! chat sessions (class 9), billing fields are the operator's (class 10), and `403` messages
//! say in words what is missing (class 12, messages).

use serde_json::json;

use crate::chat::seed;
use reqwest::Method;

use crate::harness::{run_scenarios, Api, Resp, Scenario, TestServer};

/// The forms of an id the id parser accepts or a client might try: canonical, upper case,
/// simple (no hyphens), upper-case simple, braced, URN.
fn id_forms(id: &str) -> Vec<String> {
    let simple = id.replace('-', "");
    vec![
        id.to_string(),
        id.to_uppercase(),
        simple.clone(),
        simple.to_uppercase(),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
    ]
}

fn assert_invalid(r: &Resp, what: &str) {
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "{what}: {:?}",
        r.body
    );
}

/// A word with a lower-case letter followed by an upper-case one: an enum name such as
/// `ApiKeysManage` leaking into a message.
fn has_camel_case(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
        w.as_bytes()
            .windows(2)
            .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase())
    })
}

#[tokio::test]
async fn a_slug_never_takes_an_id_and_an_id_reaches_only_its_agent() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("slugs").await;
    let ws = op.create_workspace(&org, "kb").await;
    let owner = op.user_client(&org, "owner@s.io", "member").await;
    let other = op.user_client(&org, "other@s.io", "member").await;
    let admin = op.user_client(&org, "admin@s.io", "admin").await;
    let base = format!("/v1/workspaces/{ws}/agents");

    let r = owner
        .post(&base, json!({"name": "Victim", "public": false}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let victim = r.id();
    let victim_slug = r.body["slug"].as_str().expect("slug").to_string();

    // Another member cannot create or rename an agent to a slug shaped like the victim's id,
    // in any form.
    let r = other.post(&base, json!({"name": "Mine"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mine = r.id();
    for form in id_forms(&victim) {
        let r = other
            .post(&base, json!({"name": "Impostor", "slug": form}))
            .await;
        assert_invalid(&r, &format!("create with slug {form}"));
        let r = other
            .patch(&format!("{base}/{mine}"), json!({"slug": form}))
            .await;
        assert_invalid(&r, &format!("rename to slug {form}"));
    }
    // A name that is an id derives a slug that is not one.
    let r = other.post(&base, json!({"name": victim})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["slug"], format!("slug-{victim}"));

    // An agent row written before the rule with the victim's id as its slug (straight into
    // the store, as an older version could have): lookups by the id still reach the victim.
    let impostor = "00000000-0000-4000-8000-00000000beef";
    {
        let id = uuid::Uuid::parse_str(&ws).expect("ws id");
        let (_, handle) = s.app.tenancy().open_workspace(id).expect("open workspace");
        handle
            .conn()
            .execute(
                "INSERT INTO agents (id, slug, name, public, created_at, updated_at)
                 VALUES (?1, ?2, 'Impostor', 1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
                rusqlite::params![impostor, victim],
            )
            .expect("insert legacy agent");
    }
    for key in [
        victim.clone(),
        victim.to_uppercase(),
        victim.replace('-', ""),
    ] {
        let r = owner.get(&format!("{base}/{key}")).await;
        assert_eq!(
            (r.status, r.body["id"].as_str()),
            (200, Some(victim.as_str())),
            "GET {key}: {:?}",
            r.body
        );
        // To a member who may not see the private agent, the id names nothing.
        let r = other.get(&format!("{base}/{key}")).await;
        assert_eq!(r.status, 404, "GET {key} by another member: {:?}", r.body);
    }
    let r = owner
        .patch(
            &format!("{base}/{victim}"),
            json!({"description": "patched"}),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["id"].as_str(),
            r.body["description"].as_str()
        ),
        (200, Some(victim.as_str()), Some("patched")),
        "{:?}",
        r.body
    );
    let r = other
        .patch(
            &format!("{base}/{victim}"),
            json!({"description": "mine now"}),
        )
        .await;
    assert_eq!(r.status, 404, "PATCH by another member: {:?}", r.body);
    let r = admin.get(&format!("{base}/{impostor}")).await;
    assert_eq!(
        (r.status, r.body["description"].as_str()),
        (200, Some("")),
        "the impostor is untouched: {:?}",
        r.body
    );

    // Chat and the OpenAI facade's `model`.
    let chat = format!("/v1/workspaces/{ws}/chat");
    let r = owner
        .post(&chat, json!({"query": "hello", "agent_id": victim}))
        .await;
    assert_eq!(
        (r.status, r.body["agent_id"].as_str()),
        (200, Some(victim.as_str())),
        "{:?}",
        r.body
    );
    let r = other
        .post(&chat, json!({"query": "hello", "agent_id": victim}))
        .await;
    assert_eq!(r.status, 404, "chat by another member: {:?}", r.body);
    let facade = format!("/v1/workspaces/{ws}/openai/v1");
    let r = owner.get(&format!("{facade}/models/{victim}")).await;
    assert_eq!(
        (r.status, r.body["id"].as_str()),
        (200, Some(victim_slug.as_str())),
        "{:?}",
        r.body
    );
    let completion =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    let r = owner
        .post(&format!("{facade}/chat/completions"), completion(&victim))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = other
        .post(&format!("{facade}/chat/completions"), completion(&victim))
        .await;
    assert_eq!(r.status, 404, "completion by another member: {:?}", r.body);
    let r = other.get(&format!("{facade}/models/{victim}")).await;
    assert_eq!(r.status, 404, "model by another member: {:?}", r.body);
}

#[tokio::test]
async fn org_and_workspace_slugs_never_take_an_id() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("first").await;
    let other_org = op.create_org("second").await;
    let ws = op.create_workspace(&org, "kb").await;
    let admin = op.user_client(&org, "admin@o.io", "admin").await;

    for form in id_forms(&other_org) {
        let r = op
            .post("/v1/orgs", json!({"name": "Impostor", "slug": form}))
            .await;
        assert_invalid(&r, &format!("org create with slug {form}"));
        let r = admin
            .patch(&format!("/v1/orgs/{org}"), json!({"slug": form}))
            .await;
        assert_invalid(&r, &format!("org rename to slug {form}"));
    }
    for form in id_forms(&ws) {
        let r = admin
            .post(
                &format!("/v1/orgs/{org}/workspaces"),
                json!({"name": "Impostor", "slug": form}),
            )
            .await;
        assert_invalid(&r, &format!("workspace create with slug {form}"));
        let r = admin
            .patch(&format!("/v1/workspaces/{ws}"), json!({"slug": form}))
            .await;
        assert_invalid(&r, &format!("workspace rename to slug {form}"));
    }
    // Names that are ids derive slugs that are not.
    let r = op.post("/v1/orgs", json!({"name": other_org})).await;
    assert_eq!(
        (r.status, r.body["slug"].as_str()),
        (201, Some(format!("slug-{other_org}").as_str())),
        "{:?}",
        r.body
    );
    let r = admin
        .post(
            &format!("/v1/orgs/{org}/workspaces"),
            json!({"name": ws.to_uppercase()}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["slug"].as_str()),
        (201, Some(format!("slug-{ws}").as_str())),
        "{:?}",
        r.body
    );
    // The org is still reached by its id and its slug, each for what it is.
    assert_eq!(admin.get(&format!("/v1/orgs/{org}")).await.body["id"], org);
    assert_eq!(admin.get("/v1/orgs/first").await.body["id"], org);
}

#[tokio::test]
async fn a_tenant_tokens_chat_session_is_its_own_unless_a_subject_is_shared() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("sessions").await;
    let ws = op.create_workspace(&org, "kb").await;
    seed(&s, &ws).await;
    let key = op.key_client(&ws, &["search", "chat"]).await;
    let chat = |api: &Api, session: Option<&str>| {
        let api = api.clone();
        let body = match session {
            Some(sid) => json!({"query": "alpha pricing", "session_id": sid}),
            None => json!({"query": "alpha pricing"}),
        };
        async move { api.post("/v1/chat", body).await }
    };

    // Two tokens of one key, no subject, different filters.
    let a = key
        .tenant_client(json!({"filter": {"group": "sales"}}))
        .await;
    let b = key.tenant_client(json!({"filter": {"group": "eng"}})).await;
    let r = chat(&a, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let sid = r.body["session_id"].as_str().expect("session").to_string();
    let r = chat(&b, Some(&sid)).await;
    assert_eq!(
        (r.status, r.code()),
        (404, "not_found"),
        "another token continues A's session: {:?}",
        r.body
    );
    let r = chat(&a, Some(&sid)).await;
    assert_eq!(
        (r.status, r.body["session_id"].as_str()),
        (200, Some(sid.as_str())),
        "{:?}",
        r.body
    );
    // Neither the key nor a token with a subject reach it.
    assert_eq!(chat(&key, Some(&sid)).await.status, 404);
    let with_subject = key.tenant_client(json!({"subject": "end-user-1"})).await;
    assert_eq!(chat(&with_subject, Some(&sid)).await.status, 404);
    let empty_subject = key.tenant_client(json!({"subject": ""})).await;
    assert_eq!(chat(&empty_subject, Some(&sid)).await.status, 404);
    // An admin reads the session's messages: both exchanges, A's only.
    let admin = op.user_client(&org, "a@s.io", "admin").await;
    let r = admin
        .get(&format!("/v1/workspaces/{ws}/sessions/{sid}/messages"))
        .await;
    assert_eq!(
        (r.status, r.body["data"].as_array().map(Vec::len)),
        (200, Some(4)),
        "{:?}",
        r.body
    );

    // Two tokens naming the same subject are one end user: both continue its session; another
    // subject cannot.
    let c = key
        .tenant_client(json!({"subject": "end-user-7", "filter": {"group": "sales"}}))
        .await;
    let d = key.tenant_client(json!({"subject": "end-user-7"})).await;
    let e = key.tenant_client(json!({"subject": "end-user-8"})).await;
    let r = chat(&c, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let shared = r.body["session_id"].as_str().expect("session").to_string();
    let r = chat(&d, Some(&shared)).await;
    assert_eq!(r.status, 200, "same subject: {:?}", r.body);
    let r = chat(&c, Some(&shared)).await;
    assert_eq!(r.status, 200, "same subject, first token: {:?}", r.body);
    let r = chat(&e, Some(&shared)).await;
    assert_eq!(r.status, 404, "another subject: {:?}", r.body);
    let r = chat(&a, Some(&shared)).await;
    assert_eq!(r.status, 404, "a token without subject: {:?}", r.body);
}

#[tokio::test]
async fn plan_status_and_limits_are_changed_by_the_operator_only() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("billing").await;
    let ws = op.create_workspace(&org, "kb").await;
    let owner = op.user_client(&org, "o@b.io", "owner").await;
    let admin = op.user_client(&org, "a@b.io", "admin").await;
    let path = format!("/v1/orgs/{org}");

    for (who, api) in [("owner", &owner), ("admin", &admin)] {
        for body in [
            json!({"plan": "enterprise"}),
            json!({"plan": "free"}),
            json!({"name": "Renamed", "plan": "team"}),
            json!({"status": "active"}),
            json!({"status": "suspended"}),
            json!({"limits": {"workspaces": null}}),
        ] {
            let r = Scenario::patch(&format!("{who} {body}"), api, &path, body.clone())
                .fails(403, "forbidden")
                .message_has("plan, status or limits")
                .message_has("operator")
                .run()
                .await;
            assert!(!has_camel_case(r.message()), "{}", r.message());
        }
    }
    let r = op.get(&path).await;
    assert_eq!(
        (r.body["plan"].as_str(), r.body["name"].as_str()),
        (Some("enterprise"), Some("billing")),
        "nothing changed (the harness makes enterprise orgs): {:?}",
        r.body
    );
    // The org's own admins still change what is theirs.
    let r = admin
        .patch(
            &path,
            json!({"name": "Billing Inc", "settings": {"brand": "blue"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The operator changes the plan; status has its own routes; limits are the plan's with the
    // overrides of /v1/admin/orgs/{org}/limits.
    let r = op.patch(&path, json!({"plan": "team"})).await;
    assert_eq!(
        (r.status, r.body["plan"].as_str()),
        (200, Some("team")),
        "{:?}",
        r.body
    );
    assert_invalid(
        &op.patch(&path, json!({"status": "suspended"})).await,
        "operator PATCH status",
    );
    assert_invalid(
        &op.patch(&path, json!({"limits": {"documents": 1}})).await,
        "operator PATCH limits",
    );
    // Suspending stays the operator's.
    let r = owner.post(&format!("{path}/suspend"), json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    // A workspace has no billing field to change (an unknown field is refused).
    let r = admin
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"plan": "enterprise"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "invalid_request"),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn forbidden_answers_say_in_words_what_is_missing() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("words").await;
    let ws = op.create_workspace(&org, "kb").await;
    let viewer = op.user_client(&org, "v@w.io", "viewer").await;
    let member = op.user_client(&org, "m@w.io", "member").await;
    let admin = op.user_client(&org, "a@w.io", "admin").await;
    let search_key = op.key_client(&ws, &["search", "chat"]).await;
    let tenant = search_key.tenant_client(json!({})).await;

    let w = format!("/v1/workspaces/{ws}");
    let forbidden = |what: &str, client: &Api, method: Method, path: String, words: &str| {
        Scenario::new(what, client, method, path)
            .fails(403, "forbidden")
            .message_has(words)
    };
    let cases = [
        forbidden(
            "viewer creates an API key",
            &viewer,
            Method::POST,
            format!("{w}/api-keys"),
            "manage API keys",
        )
        .body(json!({"name": "k", "scopes": ["search"]})),
        forbidden(
            "member creates a workspace",
            &member,
            Method::POST,
            format!("/v1/orgs/{org}/workspaces"),
            "create workspaces",
        )
        .body(json!({"name": "x"})),
        forbidden(
            "viewer adds a document",
            &viewer,
            Method::POST,
            format!("{w}/documents"),
            "add, replace or delete documents",
        )
        .body(json!({"title": "t", "text": "x"})),
        forbidden(
            "search key adds a document",
            &search_key,
            Method::POST,
            "/v1/documents".into(),
            "add, replace or delete documents",
        )
        .body(json!({"title": "t", "text": "x"})),
        forbidden(
            "tenant token lists sessions",
            &tenant,
            Method::GET,
            "/v1/sessions".into(),
            "read chat sessions",
        ),
        forbidden(
            "admin deletes the org",
            &admin,
            Method::DELETE,
            format!("/v1/orgs/{org}"),
            "delete this organization",
        ),
        forbidden(
            "member renames the org",
            &member,
            Method::PATCH,
            format!("/v1/orgs/{org}"),
            "change this organization's name",
        )
        .body(json!({"name": "x"})),
        forbidden(
            "admin lists all orgs' audit log",
            &admin,
            Method::GET,
            "/v1/admin/audit".into(),
            "",
        ),
    ];
    for (case, r) in cases.iter().zip(run_scenarios(&cases).await) {
        let (what, m) = (case.name(), r.message());
        assert!(!has_camel_case(m), "{what}: {m}");
        assert!(
            m.contains("needs") || m.contains("operator"),
            "{what}: the message says who may: {m}"
        );
    }
}
