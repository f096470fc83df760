//! Plans and limits (issue 12 part A's vocabulary): the names of the limits, their JSON form
//! (`null` = unlimited), a plan's limits with an org's overrides on top. Storage of plans and
//! overrides is in `control::plans`; this module knows no SQL. Governance enforces them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The plan an org gets when it is created without one.
pub const DEFAULT_PLAN: &str = "free";

/// Plans that exist on every server and cannot be deleted (their limits can be changed).
pub const BUILTIN_PLANS: [&str; 3] = ["free", "team", "enterprise"];

/// Highest ingest priority weight a plan or an override may set.
pub const MAX_PRIORITY: u32 = 1000;

/// One limit of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Workspaces,
    Documents,
    StorageBytes,
    Members,
    ApiKeys,
    UploadBytes,
    RequestsPerMinutePerKey,
    RequestsPerMinutePerOrg,
    ChatTokensPerMonth,
    EmbeddingChunksPerMonth,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::Workspaces,
        Limit::Documents,
        Limit::StorageBytes,
        Limit::Members,
        Limit::ApiKeys,
        Limit::UploadBytes,
        Limit::RequestsPerMinutePerKey,
        Limit::RequestsPerMinutePerOrg,
        Limit::ChatTokensPerMonth,
        Limit::EmbeddingChunksPerMonth,
    ];

    /// The key of the limit in JSON (plans, overrides) and the `resource` of a refusal.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Workspaces => "workspaces",
            Limit::Documents => "documents",
            Limit::StorageBytes => "storage_bytes",
            Limit::Members => "members",
            Limit::ApiKeys => "api_keys",
            Limit::UploadBytes => "upload_bytes",
            Limit::RequestsPerMinutePerKey => "requests_per_minute_per_key",
            Limit::RequestsPerMinutePerOrg => "requests_per_minute_per_org",
            Limit::ChatTokensPerMonth => "chat_tokens_per_month",
            Limit::EmbeddingChunksPerMonth => "embedding_chunks_per_month",
        }
    }

    pub fn parse(s: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.as_str() == s)
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

/// The key of the ingest priority weight in a plan's or an org's JSON.
pub const PRIORITY_KEY: &str = "ingest_priority";

/// A full set of limits: `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    values: [Option<u64>; 10],
    /// The org's weight in the job scheduler (higher = larger share), at least 1.
    pub ingest_priority: u32,
}

impl Limits {
    /// Everything unlimited, priority 1.
    pub fn unlimited() -> Limits {
        Limits {
            values: [None; 10],
            ingest_priority: 1,
        }
    }

    pub fn get(&self, limit: Limit) -> Option<u64> {
        self.values[limit.index()]
    }

    pub fn set(&mut self, limit: Limit, value: Option<u64>) {
        self.values[limit.index()] = value;
    }

    /// A plan's limits from its stored JSON object (a missing key is unlimited) and priority.
    pub fn from_plan(json: &Value, priority: i64) -> Result<Limits> {
        let mut l = Limits::unlimited();
        l.ingest_priority = u32::try_from(priority.clamp(1, MAX_PRIORITY as i64)).unwrap_or(1);
        l.apply(json)?;
        Ok(l)
    }

    /// Applies overrides: each key present sets that limit (`null`: unlimited); `ingest_priority`
    /// sets the weight. Unknown keys and values that are not non-negative integers are `400`.
    pub fn apply(&mut self, overrides: &Value) -> Result<()> {
        let map = validate_overrides(overrides)?;
        for (k, v) in map {
            if k == PRIORITY_KEY {
                self.ingest_priority = priority_of(v)?;
                continue;
            }
            let limit = Limit::parse(k).ok_or_else(|| unknown_key(k))?;
            self.set(limit, count_of(k, v)?);
        }
        Ok(())
    }

    /// The JSON form: every limit by name (`null` = unlimited) and `ingest_priority`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for l in Limit::ALL {
            m.insert(
                l.as_str().into(),
                self.get(l).map_or(Value::Null, Value::from),
            );
        }
        m.insert(PRIORITY_KEY.into(), Value::from(self.ingest_priority));
        Value::Object(m)
    }
}

impl Serialize for Limits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

fn unknown_key(k: &str) -> Error {
    let known: Vec<&str> = Limit::ALL.iter().map(|l| l.as_str()).collect();
    Error::invalid(format!(
        "unknown limit {k:?}: the limits are {}, and {PRIORITY_KEY}",
        known.join(", ")
    ))
}

fn count_of(k: &str, v: &Value) -> Result<Option<u64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| {
            Error::invalid(format!(
                "limit {k:?} must be a whole number of 0 or more, or null for unlimited"
            ))
        }),
        _ => Err(Error::invalid(format!(
            "limit {k:?} must be a whole number of 0 or more, or null for unlimited"
        ))),
    }
}

fn priority_of(v: &Value) -> Result<u32> {
    v.as_u64()
        .filter(|p| (1..=MAX_PRIORITY as u64).contains(p))
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{PRIORITY_KEY} must be a whole number from 1 to {MAX_PRIORITY}"
            ))
        })
}

/// Checks a limits object (plan limits or org overrides) without applying it.
pub fn validate_overrides(v: &Value) -> Result<&Map<String, Value>> {
    let map = v
        .as_object()
        .ok_or_else(|| Error::invalid("limits must be a JSON object"))?;
    for (k, val) in map {
        if k == PRIORITY_KEY {
            priority_of(val)?;
        } else if Limit::parse(k).is_none() {
            return Err(unknown_key(k));
        } else {
            count_of(k, val)?;
        }
    }
    Ok(map)
}

/// A plan as the operator sees and edits it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub builtin: bool,
    /// Every limit (`null` = unlimited) and `ingest_priority`.
    pub limits: Limits,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /v1/admin/plans`, `enclave plan create`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    pub id: String,
    pub name: Option<String>,
    /// Limits by name (a missing one is unlimited) and optionally `ingest_priority`.
    #[serde(default)]
    pub limits: Option<Value>,
}

/// `PATCH /v1/admin/plans/{plan}`, `enclave plan update`: `limits` keys replace those limits
/// (`null`: unlimited), the others stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    pub name: Option<String>,
    pub limits: Option<Value>,
}

/// What an org is held to: its plan, its overrides and the result.
#[derive(Debug, Clone, Serialize)]
pub struct OrgLimits {
    pub org_id: uuid::Uuid,
    pub plan: String,
    /// The org's own values, over the plan's (`null` = unlimited).
    pub overrides: Value,
    /// What is enforced.
    pub effective: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_is_unlimited_and_overrides_win() {
        let mut l = Limits::from_plan(&json!({"workspaces": 3, "documents": null}), 2).unwrap();
        assert_eq!(l.get(Limit::Workspaces), Some(3));
        assert_eq!(l.get(Limit::Documents), None);
        assert_eq!(l.get(Limit::Members), None);
        assert_eq!(l.ingest_priority, 2);
        l.apply(&json!({"workspaces": null, "members": 0, "ingest_priority": 7}))
            .unwrap();
        assert_eq!(l.get(Limit::Workspaces), None);
        assert_eq!(l.get(Limit::Members), Some(0));
        assert_eq!(l.ingest_priority, 7);
        let j = l.to_json();
        assert_eq!(j["workspaces"], Value::Null);
        assert_eq!(j["members"], json!(0));
        assert_eq!(j.as_object().map(|m| m.len()), Some(11));
    }

    #[test]
    fn bad_limits_are_refused_with_what_to_change() {
        for bad in [
            json!({"workspace": 3}),
            json!({"workspaces": -1}),
            json!({"workspaces": 1.5}),
            json!({"workspaces": "3"}),
            json!({"ingest_priority": 0}),
            json!({"ingest_priority": null}),
            json!([1]),
        ] {
            match validate_overrides(&bad) {
                Err(Error::Invalid(m)) => assert!(!m.is_empty()),
                other => panic!("{bad}: {other:?}"),
            }
        }
        match validate_overrides(&json!({"workspace": 3})) {
            Err(Error::Invalid(m)) => assert!(m.contains("workspaces"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
