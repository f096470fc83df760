//! `enclave bench auth`: the cost of authentication. The same request goes through the same
//! router and middleware in-process (tower `oneshot`, no network), once to a handler without
//! auth and once to the same handler behind the tenant-context extractor, with an API key, a
//! tenant token and a user session. Interleaved rounds, so drift hits every variant alike.
//! The same API key request is measured in an org without rate limits (the `enterprise` plan)
//! and in one whose limits are set (so high that nothing is refused): the difference is what
//! the rate limits (governance) add to the auth path.

use super::report::{percentile, Table};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tower::ServiceExt;
use uuid::Uuid;

use crate::app::App;
use crate::config::{Config, ConfigArgs};
use crate::control::NewWorkspace;
use crate::http::auth::{Scope, WorkspaceContext};
use crate::http::error::ApiError;
use crate::identity::{NewApiKey, NewTenantToken, Role};

/// The p50 budget of authentication.
pub const BUDGET_P50: Duration = Duration::from_micros(20);

/// The p50 budget of the rate limits on top of authentication.
pub const RATE_BUDGET_P50: Duration = Duration::from_micros(2);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests per variant.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
}

/// The bench workspace's id, for the handler without auth.
#[derive(Clone)]
struct Probe {
    app: Arc<App>,
    ws: Uuid,
}

async fn without_auth(State(p): State<Probe>) -> axum::Json<serde_json::Value> {
    let _ = &p.app;
    axum::Json(json!({"workspace_id": p.ws, "ok": true}))
}

async fn with_auth(ctx: WorkspaceContext) -> Result<axum::Json<serde_json::Value>, ApiError> {
    // What a domain function does first: the permission table.
    ctx.require(Scope::Search)?;
    Ok(axum::Json(
        json!({"workspace_id": ctx.workspace_id(), "ok": true}),
    ))
}

fn router(app: Arc<App>, ws: Uuid) -> Router {
    let open = Router::new()
        .route("/open/{ws}/probe", get(without_auth))
        .with_state(Probe {
            app: app.clone(),
            ws,
        });
    let authed = Router::new()
        .route("/v1/workspaces/{ws}/probe", get(with_auth))
        .layer(axum::middleware::from_fn(crate::http::ratelimit::headers))
        .with_state(app.clone());
    open.merge(authed)
        .layer(axum::middleware::from_fn_with_state(
            app,
            crate::http::middleware::request_context,
        ))
}

struct Fixture {
    app: Arc<App>,
    ws: Uuid,
    key: String,
    token: String,
    session: String,
    /// The workspace and an API key of the org with rate limits.
    limited_ws: Uuid,
    limited_key: String,
    dir: std::path::PathBuf,
}

fn fixture() -> anyhow::Result<Fixture> {
    let dir = std::env::temp_dir().join(format!("enclave-bench-auth-{}", Uuid::now_v7().simple()));
    let mut config = Config::for_data_dir(&dir);
    config.admin_token = Some("bench-operator-token-0123456789".into());
    let (app, _) = App::open(config)?;
    let org = super::unlimited_org(&app, "Bench")?;
    let ws = app.tenancy().create_workspace(
        &app.identity().operator_org(&org.slug)?,
        NewWorkspace {
            name: "Bench".into(),
            ..Default::default()
        },
    )?;
    let op = app.identity().operator_workspace(ws.id)?;
    let (_, key) = app.identity().create_api_key(
        &op,
        NewApiKey {
            name: "bench".into(),
            scopes: vec!["search".into(), "chat".into()],
            expires_at: None,
        },
    )?;
    let key_access =
        app.identity()
            .workspace_access(&app.identity().authenticate(&key)?, None, None)?;
    let token = app
        .identity()
        .mint_tenant_token(
            &key_access,
            NewTenantToken {
                filter: Some(json!({"group": "sales"})),
                ..Default::default()
            },
        )?
        .token;
    app.identity().create_user(
        "bench@example.com",
        "",
        "bench password",
        Some((&org.slug, Role::Viewer)),
    )?;
    let session = app
        .identity()
        .login("bench@example.com", "bench password", None)?
        .token;
    let limited = super::unlimited_org(&app, "Bench limited")?;
    app.governance().set_org_overrides(
        &limited.slug,
        &json!({"requests_per_minute_per_key": 1_000_000_000u64,
                "requests_per_minute_per_org": 1_000_000_000u64}),
    )?;
    let limited_ws = app.tenancy().create_workspace(
        &app.identity().operator_org(&limited.slug)?,
        NewWorkspace {
            name: "Bench".into(),
            ..Default::default()
        },
    )?;
    let op = app.identity().operator_workspace(limited_ws.id)?;
    let (_, limited_key) = app.identity().create_api_key(
        &op,
        NewApiKey {
            name: "bench".into(),
            scopes: vec!["search".into()],
            expires_at: None,
        },
    )?;
    Ok(Fixture {
        app,
        limited_ws: limited_ws.id,
        limited_key,
        ws: ws.id,
        key,
        token,
        session,
        dir,
    })
}

fn us(micros: f64) -> String {
    format!("{micros:.1} µs")
}

pub fn run(a: Args, _config: &ConfigArgs) -> anyhow::Result<()> {
    let f = fixture()?;
    let result = measure(&f, a.requests.max(100));
    f.app.shutdown();
    let _ = std::fs::remove_dir_all(&f.dir);
    result
}

fn measure(f: &Fixture, n: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let router = router(f.app.clone(), f.ws);
    let variants: [(&str, String, Option<&str>); 5] = [
        ("no auth", format!("/open/{}/probe", f.ws), None),
        (
            "API key",
            format!("/v1/workspaces/{}/probe", f.ws),
            Some(&f.key),
        ),
        (
            "tenant token",
            format!("/v1/workspaces/{}/probe", f.ws),
            Some(&f.token),
        ),
        (
            "user session",
            format!("/v1/workspaces/{}/probe", f.ws),
            Some(&f.session),
        ),
        (
            "API key, rate-limited org",
            format!("/v1/workspaces/{}/probe", f.limited_ws),
            Some(&f.limited_key),
        ),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); variants.len()];
    rt.block_on(async {
        let one = |uri: &str, cred: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(c) = cred {
                b = b.header("authorization", format!("Bearer {c}"));
            }
            let req = b.body(Body::empty());
            let r = router.clone();
            async move {
                let req = req.map_err(|e| anyhow::anyhow!("request: {e}"))?;
                let started = Instant::now();
                let resp = r.oneshot(req).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await;
                let took = started.elapsed();
                let _ = body.map_err(|e| anyhow::anyhow!("body: {e}"))?;
                anyhow::Ok(took)
            }
        };
        // Check every variant answers 200 first, then warm up.
        for (name, uri, cred) in &variants {
            let mut b = Request::builder().uri(uri.as_str());
            if let Some(c) = cred {
                b = b.header("authorization", format!("Bearer {c}"));
            }
            let resp = router.clone().oneshot(b.body(Body::empty())?).await?;
            anyhow::ensure!(resp.status() == StatusCode::OK, "{name}: {}", resp.status());
        }
        for _ in 0..(n / 10).max(100) {
            for (_, uri, cred) in &variants {
                one(uri, *cred).await?;
            }
        }
        for _ in 0..n {
            for (i, (_, uri, cred)) in variants.iter().enumerate() {
                samples[i].push(one(uri, *cred).await?);
            }
        }
        anyhow::Ok(())
    })?;
    let mut micros: Vec<Vec<f64>> = samples
        .iter()
        .map(|v| v.iter().map(|d| d.as_secs_f64() * 1e6).collect())
        .collect();
    let base50 = percentile(&mut micros[0], 50.0);
    let base99 = percentile(&mut micros[0], 99.0);
    println!(
        "enclave bench auth: {n} requests per variant, in-process through the router (oneshot)\n"
    );
    let mut table = Table::new(&[
        "variant",
        "p50",
        "p99",
        "p50 over no auth",
        "p99 over no auth",
    ]);
    let mut p50s = Vec::with_capacity(variants.len());
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let p50 = percentile(&mut micros[i], 50.0);
        let p99 = percentile(&mut micros[i], 99.0);
        p50s.push(p50);
        table.row(&[
            name.to_string(),
            us(p50),
            us(p99),
            us((p50 - base50).max(0.0)),
            us((p99 - base99).max(0.0)),
        ]);
    }
    table.print();
    let key_delta = Duration::from_secs_f64((p50s[1] - base50).max(0.0) / 1e6);
    let budget_us = BUDGET_P50.as_secs_f64() * 1e6;
    println!(
        "\nAPI key authentication costs {} at p50 (budget {}): {}",
        us(key_delta.as_secs_f64() * 1e6),
        us(budget_us),
        if key_delta < BUDGET_P50 {
            "PASS"
        } else {
            "FAIL"
        }
    );
    let rate_delta = Duration::from_secs_f64((p50s[4] - p50s[1]).max(0.0) / 1e6);
    println!(
        "rate limits (key and org buckets, RateLimit headers) add {} at p50 over the same API key \
         request in an org without limits (target {}): {}",
        us(rate_delta.as_secs_f64() * 1e6),
        us(RATE_BUDGET_P50.as_secs_f64() * 1e6),
        if rate_delta < RATE_BUDGET_P50 {
            "PASS"
        } else {
            "FAIL"
        }
    );
    anyhow::ensure!(key_delta < BUDGET_P50, "API key authentication over budget");
    Ok(())
}
