//! Users, login sessions, memberships and invitations.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use uuid::Uuid;

use super::{ControlPlane, Org};
use crate::db;
use crate::error::{Error, Resource, Result};
use crate::roles::Role;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub created_at: String,
}

/// A member of an org, as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

/// A pending invitation (never with its token).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invitation {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_at: String,
    pub expires_at: String,
}

/// A live session, as the hot path sees it.
#[derive(Debug, Clone, Copy)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
}

fn uuid(s: &str) -> Result<Uuid> {
    Uuid::try_parse(s).map_err(|_| Error::internal("corrupt id"))
}

/// The columns [`RawUser::from_row`] reads, by name.
const USER_COLUMNS: &str = "id, email, name, created_at";

/// A user row as stored; [`RawUser::finish`] parses its id.
struct RawUser {
    id: String,
    email: String,
    name: String,
    created_at: String,
}

impl RawUser {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            email: r.get("email")?,
            name: r.get("name")?,
            created_at: r.get("created_at")?,
        })
    }

    fn finish(self) -> Result<User> {
        Ok(User {
            id: uuid(&self.id)?,
            email: self.email,
            name: self.name,
            created_at: self.created_at,
        })
    }
}

/// The columns [`RawMember::from_row`] reads, by name (of `memberships m JOIN users u`).
const MEMBER_COLUMNS: &str =
    "u.id AS user_id, u.email AS email, u.name AS name, m.role AS role, m.created_at AS created_at";

/// A membership row as listed; [`RawMember::finish`] parses its id and role.
struct RawMember {
    user_id: String,
    email: String,
    name: String,
    role: String,
    created_at: String,
}

impl RawMember {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            user_id: r.get("user_id")?,
            email: r.get("email")?,
            name: r.get("name")?,
            role: r.get("role")?,
            created_at: r.get("created_at")?,
        })
    }

    fn finish(self) -> Result<Member> {
        Ok(Member {
            user_id: uuid(&self.user_id)?,
            email: self.email,
            name: self.name,
            role: Role::parse(&self.role)?,
            created_at: self.created_at,
        })
    }
}

/// The columns [`RawInvitation::from_row`] reads, by name (of `invitations i`).
const INVITATION_COLUMNS: &str = "i.id AS id, i.org_id AS org_id, i.email AS email, i.role AS role,
    i.created_at AS created_at, i.expires_at AS expires_at";

/// An invitation row as stored; [`RawInvitation::finish`] parses its ids and role.
struct RawInvitation {
    id: String,
    org_id: String,
    email: String,
    role: String,
    created_at: String,
    expires_at: String,
}

impl RawInvitation {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            org_id: r.get("org_id")?,
            email: r.get("email")?,
            role: r.get("role")?,
            created_at: r.get("created_at")?,
            expires_at: r.get("expires_at")?,
        })
    }

    fn finish(self) -> Result<Invitation> {
        Ok(Invitation {
            id: uuid(&self.id)?,
            org_id: uuid(&self.org_id)?,
            email: self.email,
            role: Role::parse(&self.role)?,
            created_at: self.created_at,
            expires_at: self.expires_at,
        })
    }
}

/// The columns [`RawSession::from_row`] reads, by name.
const SESSION_COLUMNS: &str = "id, user_id";

/// A session row as stored; [`RawSession::finish`] parses its ids.
struct RawSession {
    id: String,
    user_id: String,
}

impl RawSession {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            user_id: r.get("user_id")?,
        })
    }

    fn finish(self) -> Result<SessionRow> {
        Ok(SessionRow {
            id: uuid(&self.id)?,
            user_id: uuid(&self.user_id)?,
        })
    }
}

/// What a finished invitation acceptance did.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub user: User,
    pub org_id: Uuid,
    pub role: Role,
    pub created_user: bool,
}

impl ControlPlane {
    pub fn insert_user(&self, email: &str, name: &str, password_hash: &str) -> Result<User> {
        let id = crate::ids::new_id();
        let now = db::now();
        let r = self.conn().execute(
            "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![id.to_string(), email, name, password_hash, now],
        );
        match r {
            Ok(_) => self.get_user(id),
            Err(e) if Error::is_unique_violation(&e) => Err(Error::Conflict(format!(
                "a user with email {email:?} already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub fn get_user(&self, id: Uuid) -> Result<User> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id.to_string()],
                RawUser::from_row,
            )
            .optional()?;
        row.ok_or(Error::NotFound(Resource::User))?.finish()
    }

    /// A user and their password hash, by (normalised) email.
    pub fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = ?1"),
                [email],
                |r| Ok((RawUser::from_row(r)?, r.get::<_, String>("password_hash")?)),
            )
            .optional()?;
        row.map(|(u, h)| Ok((u.finish()?, h))).transpose()
    }

    // ---- sessions ----

    /// Opens a session at `now` (the identity layer's clock), first removing the user's
    /// sessions expired by then.
    pub fn insert_session(
        &self,
        user_id: Uuid,
        digest_hex: &str,
        now: &str,
        expires_at: &str,
    ) -> Result<Uuid> {
        let id = crate::ids::new_id();
        let conn = self.conn();
        // Expired sessions of this user are cleaned up on each login.
        conn.execute(
            "DELETE FROM sessions WHERE user_id = ?1 AND expires_at <= ?2",
            params![user_id.to_string(), now],
        )?;
        conn.execute(
            "INSERT INTO sessions (id, user_id, token_sha256, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id.to_string(),
                user_id.to_string(),
                digest_hex,
                now,
                expires_at
            ],
        )?;
        Ok(id)
    }

    /// The session with this token digest still live at `now`.
    pub fn session_by_digest(&self, digest_hex: &str, now: &str) -> Result<Option<SessionRow>> {
        let conn = self.auth_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE token_sha256 = ?1 AND expires_at > ?2"
        ))?;
        let row = stmt
            .query_row(params![digest_hex, now], RawSession::from_row)
            .optional()?;
        row.map(RawSession::finish).transpose()
    }

    pub fn delete_session(&self, id: Uuid) -> Result<()> {
        self.conn()
            .execute("DELETE FROM sessions WHERE id = ?1", [id.to_string()])?;
        Ok(())
    }

    // ---- memberships ----

    /// A user's role in an org (hot path).
    pub fn role_of(&self, org_id: Uuid, user_id: Uuid) -> Result<Option<Role>> {
        let conn = self.auth_conn();
        let mut stmt =
            conn.prepare_cached("SELECT role FROM memberships WHERE org_id = ?1 AND user_id = ?2")?;
        let role: Option<String> = stmt
            .query_row(params![org_id.to_string(), user_id.to_string()], |r| {
                r.get("role")
            })
            .optional()?;
        role.map(|r| Role::parse(&r)).transpose()
    }

    /// The orgs (not deleted) a user belongs to, with their role.
    pub fn orgs_of_user(&self, user_id: Uuid) -> Result<Vec<(Org, Role)>> {
        let ids: Vec<(String, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT m.org_id AS org_id, m.role AS role FROM memberships m
                 JOIN orgs o ON o.id = m.org_id
                 WHERE m.user_id = ?1 AND o.status <> 'deleted' ORDER BY m.org_id",
            )?;
            let rows = stmt.query_map([user_id.to_string()], |r| {
                Ok((r.get("org_id")?, r.get("role")?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for (org, role) in ids {
            match self.get_org_by_id(uuid(&org)?) {
                Ok(o) => out.push((o, Role::parse(&role)?)),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn list_members(&self, org_id: Uuid) -> Result<Vec<Member>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM memberships m
             JOIN users u ON u.id = m.user_id WHERE m.org_id = ?1 ORDER BY m.created_at, u.id"
        ))?;
        let rows = stmt.query_map([org_id.to_string()], RawMember::from_row)?;
        rows.map(|r| r?.finish()).collect()
    }

    /// Adds a membership; `Conflict` when the user already belongs to the org.
    pub fn add_member(&self, org_id: Uuid, user_id: Uuid, role: Role) -> Result<()> {
        let now = db::now();
        let r = self.conn().execute(
            "INSERT INTO memberships (org_id, user_id, role, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![org_id.to_string(), user_id.to_string(), role.as_str(), now],
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if Error::is_unique_violation(&e) || is_pk_violation(&e) => Err(
                Error::Conflict("the user is already a member of this organization".into()),
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a member's role, or removes the member (`role = None`), in one transaction that
    /// keeps at least one owner. `check` sees the member's current role and may refuse.
    pub fn change_membership(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        role: Option<Role>,
        check: impl FnOnce(Role) -> Result<()>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Option<String> = tx
            .query_row(
                "SELECT role FROM memberships WHERE org_id = ?1 AND user_id = ?2",
                params![org_id.to_string(), user_id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let current = Role::parse(&current.ok_or(Error::NotFound(Resource::Member))?)?;
        check(current)?;
        if current == Role::Owner && role != Some(Role::Owner) {
            let owners: i64 = tx.query_row(
                "SELECT count(*) FROM memberships WHERE org_id = ?1 AND role = 'owner'",
                [org_id.to_string()],
                |r| r.get(0),
            )?;
            if owners <= 1 {
                return Err(Error::Conflict(
                    "an organization must keep at least one owner".into(),
                ));
            }
        }
        match role {
            Some(r) => tx.execute(
                "UPDATE memberships SET role = ?3, updated_at = ?4 WHERE org_id = ?1 AND user_id = ?2",
                params![org_id.to_string(), user_id.to_string(), r.as_str(), db::now()],
            )?,
            None => tx.execute(
                "DELETE FROM memberships WHERE org_id = ?1 AND user_id = ?2",
                params![org_id.to_string(), user_id.to_string()],
            )?,
        };
        tx.commit()?;
        Ok(())
    }

    // ---- invitations ----

    pub fn insert_invitation(
        &self,
        org_id: Uuid,
        email: &str,
        role: Role,
        digest_hex: &str,
        invited_by: Option<Uuid>,
        expires_at: &str,
    ) -> Result<Invitation> {
        let id = crate::ids::new_id();
        let now = db::now();
        self.conn().execute(
            "INSERT INTO invitations (id, org_id, email, role, token_sha256, invited_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id.to_string(),
                org_id.to_string(),
                email,
                role.as_str(),
                digest_hex,
                invited_by.map(|u| u.to_string()),
                now,
                expires_at
            ],
        )?;
        Ok(Invitation {
            id,
            org_id,
            email: email.to_string(),
            role,
            created_at: now,
            expires_at: expires_at.to_string(),
        })
    }

    /// The open (unaccepted, unexpired at `now`) invitation with this token digest, in a live
    /// org.
    pub fn open_invitation(&self, digest_hex: &str, now: &str) -> Result<Invitation> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {INVITATION_COLUMNS}
                     FROM invitations i JOIN orgs o ON o.id = i.org_id
                     WHERE i.token_sha256 = ?1 AND i.accepted_at IS NULL AND i.expires_at > ?2
                       AND o.status = 'active'"
                ),
                params![digest_hex, now],
                RawInvitation::from_row,
            )
            .optional()?;
        row.ok_or(Error::NotFound(Resource::Invitation))?.finish()
    }

    /// Accepts an invitation in one transaction: marks it used (once only), creates the user
    /// when `new_user` gives a name and password hash and no user has the email, and adds the
    /// membership (an existing member keeps the stronger of both roles). `now` is the identity
    /// layer's clock: the invitation must still be unexpired then.
    pub fn accept_invitation(
        &self,
        invitation: &Invitation,
        existing_user: Option<Uuid>,
        new_user: Option<(&str, &str)>,
        now: &str,
    ) -> Result<Accepted> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE invitations SET accepted_at = ?2
             WHERE id = ?1 AND accepted_at IS NULL AND expires_at > ?2",
            params![invitation.id.to_string(), now],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Invitation));
        }
        let (user_id, created_user) =
            match (existing_user, new_user) {
                (Some(id), _) => (id, false),
                (None, Some((name, hash))) => {
                    let id = crate::ids::new_id();
                    let r = tx.execute(
                        "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![id.to_string(), invitation.email, name, hash, now],
                    );
                    match r {
                        Ok(_) => (id, true),
                        Err(e) if Error::is_unique_violation(&e) => return Err(Error::Conflict(
                            "a user with this email exists: log in and accept with your session"
                                .into(),
                        )),
                        Err(e) => return Err(e.into()),
                    }
                }
                (None, None) => return Err(Error::internal("accept without a user")),
            };
        let current: Option<String> = tx
            .query_row(
                "SELECT role FROM memberships WHERE org_id = ?1 AND user_id = ?2",
                params![invitation.org_id.to_string(), user_id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let role = match current {
            Some(c) => {
                let c = Role::parse(&c)?;
                let stronger = c.max(invitation.role);
                tx.execute(
                    "UPDATE memberships SET role = ?3, updated_at = ?4 WHERE org_id = ?1 AND user_id = ?2",
                    params![invitation.org_id.to_string(), user_id.to_string(), stronger.as_str(), now],
                )?;
                stronger
            }
            None => {
                tx.execute(
                    "INSERT INTO memberships (org_id, user_id, role, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![
                        invitation.org_id.to_string(),
                        user_id.to_string(),
                        invitation.role.as_str(),
                        now
                    ],
                )?;
                invitation.role
            }
        };
        tx.commit()?;
        drop(conn);
        Ok(Accepted {
            user: self.get_user(user_id)?,
            org_id: invitation.org_id,
            role,
            created_user,
        })
    }
}

fn is_pk_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}
