//! Organizations: the billing entity that owns workspaces.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{ControlPlane, Page};
use crate::db::{self, json_column};
use crate::error::{Error, Resource, Result};
use crate::ids;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrgStatus {
    Active,
    Suspended,
    Deleted,
}

impl OrgStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgStatus::Active => "active",
            OrgStatus::Suspended => "suspended",
            OrgStatus::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(OrgStatus::Active),
            "suspended" => Ok(OrgStatus::Suspended),
            "deleted" => Ok(OrgStatus::Deleted),
            other => Err(Error::internal(format!("unknown org status {other}"))),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub plan: String,
    pub status: OrgStatus,
    pub settings: Value,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    pub name: String,
    pub slug: Option<String>,
    pub plan: Option<String>,
    pub settings: Option<Value>,
    /// The operator's: the email of the org's first owner, who gets an invitation (returned
    /// with the org). Not stored on the org.
    pub owner_email: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    pub name: Option<String>,
    pub slug: Option<String>,
    /// A billing field: the operator's only (`Action::OrgBillingUpdate`).
    pub plan: Option<String>,
    /// A billing field, named here so that naming it is refused as such (`403` to anyone but
    /// the operator); the operator changes status with `/suspend` and `/reactivate`.
    pub status: Option<Value>,
    /// A billing field: an org's limits are its plan's plus the operator's overrides
    /// (`/v1/admin/orgs/{org}/limits`).
    pub limits: Option<Value>,
    /// Merged into the current settings (RFC 7396: `null` removes a key).
    pub settings: Option<Value>,
}

impl OrgPatch {
    /// Whether the patch names a billing field (plan, status, limits), which only the operator
    /// may change.
    pub fn names_billing_fields(&self) -> bool {
        self.plan.is_some() || self.status.is_some() || self.limits.is_some()
    }
}

/// The columns [`RawOrg::from_row`] reads, by name.
const ORG_COLUMNS: &str = "id, name, slug, plan, status, settings, created_at, updated_at";

/// An org row as stored; [`RawOrg::finish`] parses the columns that can be corrupt.
struct RawOrg {
    id: String,
    name: String,
    slug: String,
    plan: String,
    status: String,
    settings: String,
    created_at: String,
    updated_at: String,
}

impl RawOrg {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            name: r.get("name")?,
            slug: r.get("slug")?,
            plan: r.get("plan")?,
            status: r.get("status")?,
            settings: r.get("settings")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }

    fn finish(self) -> Result<Org> {
        Ok(Org {
            id: Uuid::try_parse(&self.id).map_err(|_| Error::internal("corrupt org id"))?,
            name: self.name,
            slug: self.slug,
            plan: self.plan,
            status: OrgStatus::parse(&self.status)?,
            settings: json_column(&self.settings)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Requires a JSON object (settings are always objects).
pub(crate) fn require_object(v: &Value, what: &str) -> Result<()> {
    if v.is_object() {
        Ok(())
    } else {
        Err(Error::invalid(format!("{what} must be a JSON object")))
    }
}

/// RFC 7396 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl ControlPlane {
    fn check_plan(&self, plan: &str) -> Result<()> {
        let known = self
            .conn()
            .query_row("SELECT 1 FROM plans WHERE id = ?1", [plan], |_| Ok(()))
            .optional()?
            .is_some();
        if known {
            Ok(())
        } else {
            Err(Error::invalid(format!("unknown plan {plan:?}")))
        }
    }

    pub fn create_org(&self, new: NewOrg) -> Result<Org> {
        let name = ids::validate_name(&new.name)?;
        let slug = new.slug.unwrap_or_else(|| ids::slugify(&name));
        ids::validate_slug(&slug)?;
        let plan = new.plan.unwrap_or_else(|| "free".into());
        self.check_plan(&plan)?;
        let settings = new
            .settings
            .unwrap_or_else(|| Value::Object(Default::default()));
        require_object(&settings, "settings")?;
        let id = ids::new_id();
        let now = db::now();
        let inserted = self.conn().execute(
            "INSERT INTO orgs (id, name, slug, plan, status, settings, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?6)",
            params![id.to_string(), name, slug, plan, settings.to_string(), now],
        );
        match inserted {
            Ok(_) => self.get_org_by_id(id),
            Err(e) if Error::is_unique_violation(&e) => Err(Error::Conflict(format!(
                "an organization with slug {slug:?} already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// An org that is not deleted, by id.
    pub fn get_org_by_id(&self, id: Uuid) -> Result<Org> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = ?1 AND status <> 'deleted'"),
                [id.to_string()],
                RawOrg::from_row,
            )
            .optional()?;
        row.ok_or(Error::NotFound(Resource::Org))?.finish()
    }

    /// An org that is not deleted, by id or by slug.
    pub fn get_org(&self, key: &str) -> Result<Org> {
        if let Ok(id) = ids::parse_uuid(key, "organization") {
            return self.get_org_by_id(id);
        }
        if ids::validate_slug(key).is_err() {
            return Err(Error::NotFound(Resource::Org));
        }
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {ORG_COLUMNS} FROM orgs WHERE slug = ?1 AND status <> 'deleted'"),
                [key],
                RawOrg::from_row,
            )
            .optional()?;
        row.ok_or(Error::NotFound(Resource::Org))?.finish()
    }

    pub fn list_orgs(&self, page: Page) -> Result<Vec<Org>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ORG_COLUMNS} FROM orgs WHERE status <> 'deleted' ORDER BY id LIMIT ?1 OFFSET ?2"
        ))?;
        let rows = stmt.query_map(params![page.limit, page.offset], RawOrg::from_row)?;
        rows.map(|r| r?.finish()).collect()
    }

    pub fn update_org(&self, id: Uuid, patch: OrgPatch) -> Result<Org> {
        if patch.status.is_some() {
            return Err(Error::invalid(
                "an organization's status changes with POST /v1/orgs/{org}/suspend and \
                 /reactivate, not PATCH",
            ));
        }
        if patch.limits.is_some() {
            return Err(Error::invalid(
                "an organization's limits are its plan's with the operator's overrides: \
                 change \"plan\", or PUT /v1/admin/orgs/{org}/limits",
            ));
        }
        let mut org = self.get_org_by_id(id)?;
        if let Some(name) = patch.name {
            org.name = ids::validate_name(&name)?;
        }
        if let Some(slug) = patch.slug {
            ids::validate_slug(&slug)?;
            org.slug = slug;
        }
        if let Some(plan) = patch.plan {
            self.check_plan(&plan)?;
            org.plan = plan;
        }
        if let Some(settings) = patch.settings {
            require_object(&settings, "settings")?;
            merge_patch(&mut org.settings, &settings);
        }
        let updated = self.conn().execute(
            "UPDATE orgs SET name = ?2, slug = ?3, plan = ?4, settings = ?5, updated_at = ?6
             WHERE id = ?1 AND status <> 'deleted'",
            params![
                id.to_string(),
                org.name,
                org.slug,
                org.plan,
                org.settings.to_string(),
                db::now()
            ],
        );
        match updated {
            Ok(0) => Err(Error::NotFound(Resource::Org)),
            Ok(_) => self.get_org_by_id(id),
            Err(e) if Error::is_unique_violation(&e) => Err(Error::Conflict(format!(
                "an organization with slug {:?} already exists",
                org.slug
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Suspends or reactivates an org.
    pub fn set_org_status(&self, id: Uuid, status: OrgStatus) -> Result<Org> {
        if status == OrgStatus::Deleted {
            return Err(Error::internal("use delete_org to delete"));
        }
        let n = self.conn().execute(
            "UPDATE orgs SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status <> 'deleted'",
            params![id.to_string(), status.as_str(), db::now()],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Org));
        }
        self.get_org_by_id(id)
    }

    /// Marks an org and all its workspaces deleted, in one transaction. Returns the ids of the
    /// workspaces whose folders the caller must now remove.
    pub fn delete_org(&self, id: Uuid) -> Result<Vec<Uuid>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = db::now();
        let n = tx.execute(
            "UPDATE orgs SET status = 'deleted', deleted_at = ?2, updated_at = ?2
             WHERE id = ?1 AND status <> 'deleted'",
            params![id.to_string(), now],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Org));
        }
        let ws_ids: Vec<String> = {
            let mut stmt = tx.prepare(
                "UPDATE workspaces SET status = 'deleted', deleted_at = ?2, updated_at = ?2
                 WHERE org_id = ?1 AND status <> 'deleted' RETURNING id",
            )?;
            let rows = stmt.query_map(params![id.to_string(), now], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        // A deleted org's provider keys are destroyed with it.
        tx.execute(
            "DELETE FROM org_providers WHERE org_id = ?1",
            [id.to_string()],
        )?;
        tx.commit()?;
        Ok(ws_ids
            .iter()
            .filter_map(|s| Uuid::try_parse(s).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cp() -> (tempfile::TempDir, ControlPlane) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::open(tmp.path()).expect("open");
        (tmp, cp)
    }

    /// A new org named `name`, everything else derived or defaulted.
    fn named(name: &str) -> NewOrg {
        NewOrg {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_get_patch_delete() {
        let (_t, cp) = cp();
        let org = cp.create_org(named("Acme Corp")).expect("create");
        assert_eq!(org.slug, "acme-corp");
        assert_eq!(org.plan, "free");
        assert_eq!(cp.get_org("acme-corp").expect("by slug").id, org.id);
        let patched = cp
            .update_org(
                org.id,
                OrgPatch {
                    plan: Some("team".into()),
                    settings: Some(json!({"a": 1, "b": {"c": 2}})),
                    ..Default::default()
                },
            )
            .expect("patch");
        assert_eq!(patched.plan, "team");
        let patched = cp
            .update_org(
                org.id,
                OrgPatch {
                    settings: Some(json!({"a": null, "b": {"d": 3}})),
                    ..Default::default()
                },
            )
            .expect("patch 2");
        assert_eq!(patched.settings, json!({"b": {"c": 2, "d": 3}}));
        assert!(matches!(
            cp.update_org(
                org.id,
                OrgPatch {
                    plan: Some("gold".into()),
                    ..Default::default()
                }
            ),
            Err(Error::Invalid(_))
        ));
        cp.delete_org(org.id).expect("delete");
        assert!(matches!(cp.get_org_by_id(org.id), Err(Error::NotFound(_))));
        // The slug is free again once the org is deleted.
        cp.create_org(named("Acme Corp")).expect("re-create");
    }

    #[test]
    fn duplicate_slug_is_a_conflict() {
        let (_t, cp) = cp();
        let new = || NewOrg {
            name: "X".into(),
            slug: Some("same".into()),
            ..Default::default()
        };
        cp.create_org(new()).expect("first");
        assert!(matches!(cp.create_org(new()), Err(Error::Conflict(_))));
    }

    #[test]
    fn id_shaped_slugs_are_refused_and_old_ones_renamed() {
        let (_t, cp) = cp();
        let a = cp.create_org(named("A")).expect("a");
        for slug in [
            a.id.hyphenated().to_string(),
            a.id.simple().to_string(),
            a.id.hyphenated().to_string().to_uppercase(),
        ] {
            let new = NewOrg {
                name: "B".into(),
                slug: Some(slug.clone()),
                ..Default::default()
            };
            assert!(
                matches!(cp.create_org(new), Err(Error::Invalid(_))),
                "{slug}"
            );
            let patch = OrgPatch {
                slug: Some(slug.clone()),
                ..Default::default()
            };
            assert!(
                matches!(cp.update_org(a.id, patch), Err(Error::Invalid(_))),
                "{slug}"
            );
        }
        // A name that is an id derives a slug that is not one.
        let b = cp.create_org(named(&a.id.to_string())).expect("b");
        assert_eq!(b.slug, format!("slug-{}", a.id));
        // Rows from before the rule are renamed by the migration.
        let ws = crate::ids::new_id();
        cp.conn()
            .execute_batch(&format!(
                "UPDATE orgs SET slug = '{}' WHERE id = '{}';
                 INSERT INTO workspaces (id, org_id, name, slug, created_at, updated_at)
                 VALUES ('{ws}', '{}', 'w', '{}', 'now', 'now');",
                a.id.simple(),
                a.id,
                a.id,
                ws.simple()
            ))
            .expect("seed");
        assert_eq!(
            cp.get_org(&a.id.simple().to_string()).expect("by id").id,
            a.id
        );
        cp.conn()
            .execute_batch(include_str!(
                "../../schema/control/0004_id_shaped_slugs.sql"
            ))
            .expect("migrate");
        assert_eq!(
            cp.get_org_by_id(a.id).expect("a").slug,
            format!("slug-{}", a.id.simple())
        );
        assert_eq!(
            cp.get_workspace(ws).expect("ws").slug,
            format!("slug-{}", ws.simple())
        );
    }

    #[test]
    fn settings_must_be_an_object() {
        let (_t, cp) = cp();
        let bad = NewOrg {
            name: "X".into(),
            settings: Some(json!([1])),
            ..Default::default()
        };
        assert!(matches!(cp.create_org(bad), Err(Error::Invalid(_))));
    }
}
