//! The operator audit log.

use super::Identity;
use crate::control::{AuditEntry, Page};
use crate::error::Result;

impl Identity {
    /// Records an operator action; a failure is logged, never fails the request.
    pub fn record_audit(&self, entry: &AuditEntry) {
        if let Err(e) = self.control.record_audit(entry) {
            tracing::error!(error = %e, "could not write the operator audit log");
        }
    }

    pub fn list_audit(&self, org: Option<&str>, page: Page) -> Result<Vec<AuditEntry>> {
        let org_id = match org {
            Some(o) => Some(match crate::ids::parse_uuid(o, "organization") {
                Ok(id) => id,
                Err(_) => self.control.get_org(o)?.id,
            }),
            None => None,
        };
        self.control.list_audit(org_id, page)
    }
}
