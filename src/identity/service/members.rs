//! Members of an org and invitations.

use chrono::Duration;
use uuid::Uuid;

use super::access::forbidden;
use super::Identity;
use super::{LoginResult, OrgAccess};
use crate::control::{format_time, Accepted, Invitation, Member};
use crate::error::{Error, Resource, Result};
use crate::identity::permissions::may_manage_role;
use crate::identity::{normalize_email, password, secrets, Action, Principal, Role};

/// How long an invitation can be accepted.
pub const INVITATION_DAYS: i64 = 7;

impl Identity {
    pub fn list_members(&self, access: &OrgAccess) -> Result<Vec<Member>> {
        access.require(Action::MembersRead)?;
        self.control.list_members(access.org().id)
    }

    /// Changes a member's role. Admins manage admins, members and viewers; only owners grant,
    /// change or take away the owner role; the last owner stays an owner.
    pub fn change_member_role(
        &self,
        access: &OrgAccess,
        user_id: Uuid,
        role: Role,
    ) -> Result<Member> {
        access.require(Action::MembersManage)?;
        let subject = access
            .subject()
            .ok_or_else(|| forbidden(Action::MembersManage, access.principal()))?;
        if !may_manage_role(subject, role) {
            return Err(Error::forbidden("only an owner may grant the owner role"));
        }
        self.control
            .change_membership(access.org().id, user_id, Some(role), |current| {
                if may_manage_role(subject, current) {
                    Ok(())
                } else {
                    Err(Error::forbidden("only an owner may change an owner's role"))
                }
            })?;
        self.control
            .list_members(access.org().id)?
            .into_iter()
            .find(|m| m.user_id == user_id)
            .ok_or(Error::NotFound(Resource::Member))
    }

    /// Removes a member; anyone may leave (except the last owner).
    pub fn remove_member(&self, access: &OrgAccess, user_id: Uuid) -> Result<()> {
        let leaving = access.principal().user_id() == Some(user_id);
        if !leaving {
            access.require(Action::MembersManage)?;
        }
        let subject = access
            .subject()
            .ok_or_else(|| forbidden(Action::MembersManage, access.principal()))?;
        self.control
            .change_membership(access.org().id, user_id, None, |current| {
                if leaving || may_manage_role(subject, current) {
                    Ok(())
                } else {
                    Err(Error::forbidden("only an owner may remove an owner"))
                }
            })
    }

    /// Invites someone by email; returns the invitation and its single-use token.
    pub fn invite(
        &self,
        access: &OrgAccess,
        email: &str,
        role: Role,
    ) -> Result<(Invitation, String)> {
        access.require(Action::MembersManage)?;
        let subject = access
            .subject()
            .ok_or_else(|| forbidden(Action::MembersManage, access.principal()))?;
        if !may_manage_role(subject, role) {
            return Err(Error::forbidden("only an owner may invite an owner"));
        }
        let email = normalize_email(email)?;
        // Governance hook: the org's member quota (an open invitation holds a seat).
        let room = self
            .quota
            .hold(access.org_id(), None, super::Seat::Member)?;
        let token = secrets::new_invitation_token();
        let expires_at = format_time(self.state.clock().now() + Duration::days(INVITATION_DAYS));
        let inv = self.control.insert_invitation(
            access.org().id,
            &email,
            role,
            &secrets::sha256_hex(&token),
            access.principal().user_id(),
            &expires_at,
        )?;
        if let Some(room) = room {
            room.commit();
        }
        tracing::info!(org_id = %access.org().id, invitation_id = %inv.id, "invitation created");
        Ok((inv, token))
    }

    /// Accepts an invitation. A new email needs a password (the user is created and logged in);
    /// an existing user must present their own session.
    pub fn accept_invitation(
        &self,
        token: &str,
        principal: Option<&Principal>,
        pass: Option<&str>,
        name: Option<&str>,
    ) -> Result<(Accepted, Option<LoginResult>)> {
        if !secrets::well_formed(token, secrets::INVITATION_PREFIX) {
            return Err(Error::NotFound(Resource::Invitation));
        }
        let now = self.state.clock().now_text();
        let inv = self
            .control
            .open_invitation(&secrets::sha256_hex(token), &now)?;
        match self.control.user_by_email(&inv.email)? {
            Some((user, _)) => {
                if principal.and_then(Principal::user_id) != Some(user.id) {
                    return Err(Error::unauthenticated(
                        "this invitation is for an existing user: log in as that user to accept it",
                    ));
                }
                Ok((
                    self.control
                        .accept_invitation(&inv, Some(user.id), None, &now)?,
                    None,
                ))
            }
            None => {
                let pass = pass.ok_or_else(|| {
                    Error::invalid("password is required to create the invited user")
                })?;
                password::validate(pass)?;
                let name = match name.map(str::trim) {
                    Some(n) if !n.is_empty() => crate::ids::validate_name(n)?,
                    _ => String::new(),
                };
                let hash = password::hash(pass)?;
                let accepted =
                    self.control
                        .accept_invitation(&inv, None, Some((&name, &hash)), &now)?;
                let session = self.open_session(accepted.user.clone())?;
                Ok((accepted, Some(session)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::service::fixtures::{app, workspace};

    #[test]
    fn the_last_owner_stays() {
        let (_t, app) = app();
        let (org, _) = workspace(&app, "a");
        let owner = app
            .identity()
            .create_user("o@x.io", "", "password1", Some(("a", Role::Owner)))
            .expect("user");
        let access = app
            .identity()
            .org_access(&Principal::Operator, &org.to_string(), None)
            .expect("access");
        assert!(matches!(
            app.identity()
                .change_member_role(&access, owner.id, Role::Admin),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            app.identity().remove_member(&access, owner.id),
            Err(Error::Conflict(_))
        ));
        assert!(
            app.identity()
                .create_user("O@X.io", "", "password1", None)
                .is_err(),
            "emails are unique"
        );
    }
}
