//! The control plane's audit trail (hash-chained: `crate::governance::audit`).

use crate::app::App;
use crate::control::{AuditEntry, Page};
use crate::error::Result;
use crate::governance::audit::Filter;

impl App {
    /// Records a management action of the command line; a failure is logged, never fails it.
    pub fn record_audit(&self, entry: &AuditEntry) {
        crate::governance::service::record_cli(self, entry.clone());
    }

    /// The control plane's trail, newest first: every org (or one), with filters.
    pub fn list_audit(
        &self,
        org: Option<&str>,
        filter: Filter,
        page: Page,
    ) -> Result<Vec<AuditEntry>> {
        let mut filter = filter;
        filter.org_id = match org {
            Some(o) => Some(match crate::ids::parse_uuid(o, "organization") {
                Ok(id) => id,
                Err(_) => self.control.get_org(o)?.id,
            }),
            None => None,
        };
        self.governance().list_control(&filter, page)
    }
}
