//! The query and path helpers shared by the handlers.

use std::collections::HashMap;

use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use crate::control::Page;

pub use crate::task::blocking;

/// A path parameter of the matched route (a route without it is a programming error: 500).
pub fn param<'a>(p: &'a HashMap<String, String>, name: &str) -> ApiResult<&'a str> {
    p.get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::from(crate::Error::internal(format!("route has no {{{name}}}"))))
}

/// `?limit=&offset=` of the list endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl PageQuery {
    pub fn page(&self) -> crate::Result<Page> {
        Page::new(self.limit, self.offset)
    }
}
